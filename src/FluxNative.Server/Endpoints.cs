using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace FluxNative.Server;

/// <summary>The HTTP endpoints: each parses, calls <see cref="PredictionService"/>, and shapes the answer.</summary>
internal static partial class Endpoints
{
    private const int PageSize = 100;

    /// <summary>Maps the endpoints: all of them, or on a worker node (which takes no requests) health, readiness and metrics only.</summary>
    public static void Map(IEndpointRouteBuilder app, ServerRole role = ServerRole.All)
    {
        app.MapGet("/healthz", () => Json(new JsonObject { ["status"] = "ok" }));
        app.MapGet("/readyz", Ready);
        app.MapGet("/metrics", (ServerMetrics metrics) => Results.Text(metrics.Prometheus(), "text/plain; version=0.0.4", Encoding.UTF8));
        if (role == ServerRole.Worker)
        {
            return;
        }

        app.MapPost("/v1/images/generations", ImagesGenerations);
        app.MapPost("/v1/predictions", (Func<HttpContext, Task<IResult>>)(context => CreatePrediction(context, null, null)));
        app.MapPost("/v1/models/{owner}/{name}/predictions", (HttpContext context, string owner, string name) => CreatePrediction(context, owner, name));
        app.MapGet("/v1/predictions", ListPredictions);
        app.MapGet("/v1/predictions/{id}", GetPrediction);
        app.MapPost("/v1/predictions/{id}/cancel", CancelPrediction);
        app.MapGet("/v1/predictions/{id}/stream", StreamPrediction);
        app.MapMethods("/v1/files/{id}/{name}", [HttpMethods.Get, HttpMethods.Head], OutputFile);
        app.MapGet("/v1/webhooks/default/secret", (WebhookDispatcher webhooks) => Json(new JsonObject { ["key"] = webhooks.Secret }));
        MapModels(app);
    }

    /// <summary>
    /// 200 when predictions can be taken: the model is loaded and the storage can be written. No prediction ids (it needs
    /// no key): counts only.
    /// </summary>
    private static IResult Ready(HttpContext context, ModelHost host, PredictionService service, StorageMonitor storage)
    {
        if (host.LoadError is { } error)
        {
            return Json(new JsonObject { ["status"] = "failed", ["error"] = error }, StatusCodes.Status503ServiceUnavailable);
        }

        if (storage.Problem is { } problem)
        {
            return Json(new JsonObject { ["status"] = "storage_unavailable", ["error"] = problem, ["unsaved"] = storage.UnsavedCount },
                StatusCodes.Status503ServiceUnavailable);
        }

        if (!host.IsReady)
        {
            return Json(new JsonObject { ["status"] = "loading" }, StatusCodes.Status503ServiceUnavailable);
        }

        var ready = new JsonObject
        {
            ["status"] = "ready",
            ["model"] = host.Description,
            ["demo"] = host.Demo,
            ["queue_length"] = service.QueueLength,
            ["running"] = service.RunningCount,
        };
        if (SharedQueueNode(context.RequestServices) is { } node)
        {
            ready["node"] = node;
        }

        return Json(ready);
    }

    /// <summary>
    /// On a node of a shared queue (<c>--role api|worker</c>): its role, the queue (jobs waiting and leased, workers with a
    /// live lease, the oldest lease's age) and on a worker its id and the jobs it holds; null on an <c>all</c> node.
    /// </summary>
    private static JsonObject? SharedQueueNode(IServiceProvider services)
    {
        FluxServerOptions options = services.GetRequiredService<FluxServerOptions>();
        if (options.Role == ServerRole.All)
        {
            return null;
        }

        var node = new JsonObject { ["role"] = options.Role.ToString().ToLowerInvariant() };
        try
        {
            QueueState queue = services.GetRequiredService<IPredictionStore>().Queue();
            node["queue"] = new JsonObject
            {
                ["waiting"] = queue.Waiting,
                ["leased"] = queue.Leased,
                ["workers"] = queue.Workers,
                ["oldest_lease_seconds"] = queue.OldestLease is { } age ? Math.Round(age.TotalSeconds, 3) : null,
            };
        }
        catch (Exception e) when (StorageMonitor.IsStorageFault(e))
        {
            node["queue"] = null;   // gone since the storage check; the next readiness call says why
        }

        if (services.GetService<QueueWorker>() is { } worker)
        {
            node["worker_id"] = worker.Id;
            node["jobs_held"] = worker.Held;
        }

        return node;
    }

    /// <summary>OpenAI's <c>POST /v1/images/generations</c>: synchronous; the images as URLs or base64.</summary>
    private static async Task<IResult> ImagesGenerations(
        HttpContext context, FluxServerOptions options, PredictionService service, OutputFiles files, ServedModel served)
    {
        JsonElement body = await JsonBody.ReadObjectAsync(context.Request, options.MaxRequestBodyBytes).ConfigureAwait(false);
        OpenAiImageRequest request = InputParsing.ParseOpenAi(body, options);
        string model = served.ResolveOpenAi(request.Model);
        string baseUrl = BaseUrl(context, options);
        Prediction p = service.Create(new PredictionOrder
        {
            Kind = PredictionKind.OpenAi,
            Model = model,
            Input = body.GetRawText(),
            Spec = request.Spec,
            WebhookEvents = [],
            BaseUrl = baseUrl,
        });
        context.Response.Headers["X-Prediction-Id"] = p.Id;
        PredictionView final;
        try
        {
            final = await p.Completion.WaitAsync(context.RequestAborted).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            service.Stop(p, AbortReason.Canceled);   // the client went away: no one will read the images
            throw;
        }

        switch (final.Status)
        {
            case PredictionStatus.Succeeded:
                var data = new JsonArray();
                foreach (string name in final.Output ?? [])
                {
                    data.Add(request.Base64
                        ? new JsonObject { ["b64_json"] = Convert.ToBase64String(await File.ReadAllBytesAsync(files.PathOf(final.Id, name)!).ConfigureAwait(false)) }
                        : new JsonObject { ["url"] = files.Url(baseUrl, final.Id, name) });
                }

                return Json(new JsonObject
                {
                    ["created"] = final.CreatedAt.ToUnixTimeSeconds(),
                    ["data"] = data,
                    ["output_format"] = request.Spec.Format == ImageFormat.Jpeg ? "jpeg" : Images.Extension(request.Spec.Format),
                    ["size"] = $"{p.Plan.Width}x{p.Plan.Height}",
                    ["seed"] = p.Plan.Seed,
                    ["id"] = final.Id,
                });
            case PredictionStatus.Canceled:
                return ApiErrors.Result(StatusCodes.Status409Conflict, $"The generation was canceled (prediction {final.Id}).");
            default:
                bool timedOut = final.Error?.StartsWith(PredictionService.TimedOutMessage, StringComparison.Ordinal) == true;
                return ApiErrors.Result(timedOut ? StatusCodes.Status504GatewayTimeout : StatusCodes.Status500InternalServerError,
                    final.Error ?? "The generation failed.");
        }
    }

    /// <summary>
    /// Replicate's <c>POST /v1/predictions</c> (with <c>version</c>) and <c>POST /v1/models/{owner}/{name}/predictions</c>.
    /// As Replicate: a model not served is a 404, invalid input a 422 naming the fields, <c>Cancel-After</c> cancels it in time.
    /// </summary>
    private static async Task<IResult> CreatePrediction(HttpContext context, string? owner, string? name)
    {
        IServiceProvider services = context.RequestServices;
        FluxServerOptions options = services.GetRequiredService<FluxServerOptions>();
        PredictionService service = services.GetRequiredService<PredictionService>();
        WebhookDispatcher webhooks = services.GetRequiredService<WebhookDispatcher>();
        ServedModel served = services.GetRequiredService<ServedModel>();

        string? model = owner is null ? null : ResolveModel(served, $"{owner}/{name}");
        TimeSpan? wait = PreferWait(context.Request, options.MaxWait);
        TimeSpan? cancelAfter = CancelAfter.Parse(context.Request.Headers[CancelAfter.Header]);
        JsonElement body = await JsonBody.ReadObjectAsync(context.Request, options.MaxRequestBodyBytes).ConfigureAwait(false);
        string baseUrl = BaseUrl(context, options);
        Prediction p;
        try
        {
            var fields = new JsonFields(body);
            InputContract.RefuseOthers(fields, InputContract.ReplicateRequestFields, "a field of a prediction request",
                hintFor: field => InputParsing.ReplicateInputNames(options).Contains(field) ? "inputs go in input: {\"input\": {\"prompt\": …}}" : null);
            string? version = fields.String("version", 200);
            if (model is null)
            {
                (model, version) = ModelAndVersion(served, version);
            }

            JsonFields input = fields.Object("input");
            string? webhook = fields.String("webhook", 2048);
            IReadOnlyList<string> events = EventsFilter(fields);
            if (fields.String("webhook_completed", 2048) is { } completedOnly)
            {
                // Replicate's older field: a URL told only of completion.
                if (webhook is not null)
                {
                    throw ApiException.BadRequest("Give webhook (with webhook_events_filter) or webhook_completed, not both.", "webhook_completed");
                }

                (webhook, events) = (completedOnly, ["completed"]);
            }

            if (webhook is not null)
            {
                await webhooks.ValidateAsync(webhook, fields.Has("webhook") ? "webhook" : "webhook_completed", context.RequestAborted).ConfigureAwait(false);
            }

            _ = fields.Bool("stream");   // accepted; every prediction has a stream URL
            GenerationSpec spec = InputParsing.ParseReplicateInput(input, options);
            p = service.Create(new PredictionOrder
            {
                Kind = PredictionKind.Replicate,
                Model = model,
                Version = version ?? served.VersionId(),
                Input = input.Value.GetRawText(),
                Spec = spec,
                Webhook = webhook,
                WebhookEvents = events,
                BaseUrl = baseUrl,
            });
        }
        catch (ApiException e)
        {
            throw e.AsValidationError();   // Replicate answers invalid input with 422
        }

        if (cancelAfter is { } after)
        {
            CancelAfter.Schedule(service, p, after);
        }

        if (wait is { } duration)
        {
            await Task.WhenAny(p.Completion, Task.Delay(duration, context.RequestAborted)).ConfigureAwait(false);
        }

        PredictionView view = service.Get(p.Id) ?? p.View;
        context.Response.Headers.Location = $"{baseUrl}/v1/predictions/{view.Id}";
        return Json(service.RenderJson(view, baseUrl), StatusCodes.Status201Created);
    }

    /// <summary>
    /// The model and version of <c>POST /v1/predictions</c>'s <c>version</c>: <c>owner/name:id</c> or <c>owner/name</c>
    /// name the model, which must be served; a bare id is any version of the served model.
    /// </summary>
    private static (string Model, string? Version) ModelAndVersion(ServedModel served, string? version)
    {
        if (string.IsNullOrWhiteSpace(version))
        {
            throw ApiException.BadRequest("version is required: the model version to run (a version id, or owner/name of the served model), " +
                "or use POST /v1/models/{owner}/{name}/predictions.", "version");
        }

        int colon = version.IndexOf(':', StringComparison.Ordinal);
        string modelPart = colon >= 0 ? version[..colon] : version;
        if (modelPart.Contains('/', StringComparison.Ordinal))
        {
            return (ResolveModel(served, modelPart), colon >= 0 ? version[(colon + 1)..] : null);
        }

        return (served.Primary, version);
    }

    /// <summary>The served name that <paramref name="model"/> asks for; a 404 (not a field error) for any other model.</summary>
    private static string ResolveModel(ServedModel served, string model) => served.Resolve(model);

    /// <summary>
    /// The prediction; with <c>Prefer: wait</c> (or <c>wait=N</c>), as a create takes it, answered when it is finished or
    /// the wait is over, on any node (an API node follows one another node created: <see cref="PredictionService.Follow"/>).
    /// </summary>
    private static async Task<IResult> GetPrediction(string id, HttpContext context, FluxServerOptions options, PredictionService service)
    {
        if (PreferWait(context.Request, options.MaxWait) is { } wait && service.Follow(id) is { } followed)
        {
            await Task.WhenAny(followed.Completion, Task.Delay(wait, context.RequestAborted)).ConfigureAwait(false);
        }

        return service.Get(id) is { } view ? Json(service.RenderJson(view, BaseUrl(context, options))) : throw UnknownPrediction(id);
    }

    private static IResult ListPredictions(HttpContext context, FluxServerOptions options, PredictionService service)
    {
        string? cursor = context.Request.Query["cursor"].ToString() is { Length: > 0 } c ? c : null;
        if (cursor is not null && (!CursorPattern().IsMatch(cursor) || service.Get(cursor) is null))
        {
            // A cursor is the id of the last prediction of a page this server handed out; anything else would answer an empty page.
            throw ApiException.BadRequest(
                $"cursor '{(cursor.Length > 64 ? cursor[..64] + "…" : cursor)}' is not a cursor this server handed out: follow the next URL of a page.", "cursor");
        }

        string baseUrl = BaseUrl(context, options);
        IReadOnlyList<PredictionView> page = service.List(PageSize, cursor);
        return Json(new JsonObject
        {
            ["previous"] = null,
            ["next"] = page.Count == PageSize ? $"{baseUrl}/v1/predictions?cursor={page[^1].Id}" : null,
            ["results"] = new JsonArray([.. page.Select(v => (JsonNode)service.RenderJson(v, baseUrl))]),
        });
    }

    private static async Task<IResult> CancelPrediction(string id, HttpContext context, FluxServerOptions options, PredictionService service)
    {
        JsonRequestChecks.RequireJsonContentTypeIfBody(context.Request);
        PredictionView view = await service.CancelAsync(id, context.RequestAborted).ConfigureAwait(false) ?? throw UnknownPrediction(id);
        return Json(service.RenderJson(view, BaseUrl(context, options)));
    }

    /// <summary>
    /// Server-Sent Events, as Replicate's stream: <c>logs</c> (one line each, the lines so far first; a step is a tqdm line
    /// with step/total), <c>output</c> (one per image URL), <c>error</c>, and <c>done</c> (<c>{}</c>, or
    /// <c>{"reason":"error"|"canceled"}</c>), after which the stream ends; every event has an <c>id</c>. With
    /// <c>?progress=true</c> also <c>progress</c> events, <c>{"stage","step","total","steps_per_second"}</c> (opt-in:
    /// Replicate's Python client rejects event types it does not know).
    /// </summary>
    private static async Task StreamPrediction(string id, HttpContext context, PredictionService service)
    {
        Prediction? live = service.Follow(id);   // on an API node, one another node created is followed from the database
        PredictionView view;
        ChannelReader<ServerEvent>? events = null;
        if (live is not null)
        {
            (view, events) = live.Subscribe();
        }
        else
        {
            view = service.Get(id) ?? throw UnknownPrediction(id);
        }

        bool withProgress = context.Request.Query["progress"].ToString() is "1" or "true" or "True";
        long sequence = 0;
        Task WriteEventAsync(HttpResponse response, ServerEvent e, CancellationToken cancellationToken) =>
            e.Event == "progress" && !withProgress ? Task.CompletedTask : Endpoints.WriteEventAsync(response, e, ++sequence, cancellationToken);

        try
        {
            HttpResponse response = context.Response;
            response.ContentType = "text/event-stream";
            response.Headers.CacheControl = "no-store";
            response.Headers["X-Accel-Buffering"] = "no";
            CancellationToken aborted = context.RequestAborted;
            foreach (string line in view.Logs.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                await WriteEventAsync(response, new ServerEvent("logs", line), aborted).ConfigureAwait(false);
            }

            if (view.IsTerminal || events is null)
            {
                foreach (ServerEvent e in service.FinalEvents(view))
                {
                    await WriteEventAsync(response, e, aborted).ConfigureAwait(false);
                }

                return;
            }

            await response.Body.FlushAsync(aborted).ConfigureAwait(false);
            while (true)
            {
                Task<bool> more = events.WaitToReadAsync(aborted).AsTask();
                if (await Task.WhenAny(more, Task.Delay(TimeSpan.FromSeconds(15), aborted)).ConfigureAwait(false) != more)
                {
                    await response.WriteAsync(": keep-alive\n\n", aborted).ConfigureAwait(false);
                    await response.Body.FlushAsync(aborted).ConfigureAwait(false);
                    await more.ConfigureAwait(false);
                }

                if (!await more.ConfigureAwait(false))
                {
                    break;
                }

                while (events.TryRead(out ServerEvent? e))
                {
                    await WriteEventAsync(response, e, aborted).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client left.
        }
        finally
        {
            if (live is not null && events is not null)
            {
                live.Unsubscribe(events);
            }
        }
    }

    private static IResult OutputFile(string id, string name, OutputFiles files)
    {
        string? path = files.PathOf(id, name);
        if (path is null || !File.Exists(path))
        {
            return ApiErrors.Result(StatusCodes.Status404NotFound,
                $"No output file '{id}/{name}': it never existed, or it was removed after the retention period ({files.Retention}).");
        }

        return Results.File(path, OutputFiles.ContentType(name), enableRangeProcessing: true);
    }

    private static async Task WriteEventAsync(HttpResponse response, ServerEvent e, long id, CancellationToken cancellationToken)
    {
        var text = new StringBuilder();
        text.Append("event: ").Append(e.Event).Append('\n');
        text.Append("id: ").Append(id.ToString(CultureInfo.InvariantCulture)).Append('\n');
        foreach (string line in e.Data.Split('\n'))
        {
            text.Append("data: ").Append(line).Append('\n');
        }

        text.Append('\n');
        await response.WriteAsync(text.ToString(), cancellationToken).ConfigureAwait(false);
        await response.Body.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    private static IReadOnlyList<string> EventsFilter(JsonFields fields)
    {
        if (fields.Get("webhook_events_filter") is not { } element)
        {
            return WebhookDispatcher.Events;
        }

        if (element.ValueKind != JsonValueKind.Array)
        {
            throw ApiException.BadRequest($"webhook_events_filter must be an array of {string.Join(", ", WebhookDispatcher.Events)} (got {JsonBody.Describe(element)}).",
                "webhook_events_filter");
        }

        var events = new List<string>();
        foreach (JsonElement item in element.EnumerateArray())
        {
            string? name = item.ValueKind == JsonValueKind.String ? item.GetString() : null;
            if (name is null || !WebhookDispatcher.Events.Contains(name))
            {
                throw ApiException.BadRequest(
                    $"webhook_events_filter may hold only {string.Join(", ", WebhookDispatcher.Events)} (got {(name is null ? JsonBody.Describe(item) : $"'{name}'")}).",
                    "webhook_events_filter");
            }

            if (!events.Contains(name))
            {
                events.Add(name);
            }
        }

        return events;
    }

    /// <summary>Replicate's <c>Prefer: wait</c> (the longest wait) or <c>Prefer: wait=N</c> (N seconds, 1 to the longest).</summary>
    private static TimeSpan? PreferWait(HttpRequest request, TimeSpan max)
    {
        foreach (string? header in request.Headers["Prefer"])
        {
            foreach (string raw in (header ?? string.Empty).Split([',', ';'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                if (raw.Equals("wait", StringComparison.OrdinalIgnoreCase))
                {
                    return max;
                }

                if (raw.StartsWith("wait=", StringComparison.OrdinalIgnoreCase))
                {
                    string value = raw["wait=".Length..].Trim('"');
                    if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int seconds) || seconds < 1 || seconds > max.TotalSeconds)
                    {
                        throw ApiException.BadRequest($"Prefer: wait=N needs N between 1 and {max.TotalSeconds:0} seconds (got '{value}').", "Prefer");
                    }

                    return TimeSpan.FromSeconds(seconds);
                }
            }
        }

        return null;
    }

    private static string BaseUrl(HttpContext context, FluxServerOptions options) =>
        options.PublicBaseUrl is { Length: > 0 } configured
            ? configured.TrimEnd('/')
            : $"{context.Request.Scheme}://{context.Request.Host}{context.Request.PathBase}";

    private static ApiException UnknownPrediction(string id) =>
        new(StatusCodes.Status404NotFound, $"No prediction with id '{(id.Length > 64 ? id[..64] + "…" : id)}'.");

    private static IResult Json(JsonNode body, int status = StatusCodes.Status200OK) =>
        Results.Text(body.ToJsonString(ApiErrors.JsonOptions), "application/json; charset=utf-8", Encoding.UTF8, status);

    [GeneratedRegex("^[a-z0-9]{1,64}$")]
    private static partial Regex CursorPattern();
}
