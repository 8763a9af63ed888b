using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FluxNative.Server;

/// <summary>What a new prediction is: who asked, for what, and where to report.</summary>
internal sealed record PredictionOrder
{
    public required string Kind { get; init; }

    public required string Model { get; init; }

    public string? Version { get; init; }

    /// <summary>The input as the client sent it (JSON text), kept with the prediction.</summary>
    public required string Input { get; init; }

    public required GenerationSpec Spec { get; init; }

    public string? Webhook { get; init; }

    public IReadOnlyList<string> WebhookEvents { get; init; } = WebhookDispatcher.Events;

    public required string BaseUrl { get; init; }
}

/// <summary>
/// The scheduler in front of the pipeline: one bounded FIFO queue, one worker (so never two pipeline runs at once; compatible
/// predictions at the head of the queue share one batched run),
/// a deadline per prediction, cancellation, persistence at every status change, events for the streams, webhooks
/// and metrics. The endpoints are thin calls into this.
/// </summary>
internal sealed class PredictionService : BackgroundService
{
    /// <summary>How the error of a prediction that ran out of time begins.</summary>
    public const string TimedOutMessage = "The prediction timed out";

    private readonly FluxServerOptions options;
    private readonly ModelHost host;
    private readonly PredictionStore store;
    private readonly OutputFiles files;
    private readonly WebhookDispatcher webhooks;
    private readonly ServerMetrics metrics;
    private readonly ILogger<PredictionService> logger;
    private readonly ConcurrentDictionary<string, Prediction> live = new(StringComparer.Ordinal);
    private readonly LinkedList<Prediction> queue = new();
    private readonly object queueGate = new();
    private readonly SemaphoreSlim available = new(0);
    private volatile Prediction? running;
    private volatile bool shuttingDown;
    private double averageSeconds = 5;

    public PredictionService(
        FluxServerOptions options, ModelHost host, PredictionStore store, OutputFiles files, WebhookDispatcher webhooks, ServerMetrics metrics,
        ILogger<PredictionService> logger)
    {
        this.options = options;
        this.host = host;
        this.store = store;
        this.files = files;
        this.webhooks = webhooks;
        this.metrics = metrics;
        this.logger = logger;
        metrics.Observe(() => QueueLength, () => running is null ? 0 : 1);
    }

    /// <summary>Predictions waiting for the pipeline.</summary>
    public int QueueLength
    {
        get
        {
            lock (queueGate)
            {
                return queue.Count;
            }
        }
    }

    /// <summary>The id of the prediction the pipeline runs now, or null.</summary>
    public string? Running => running?.Id;

    /// <summary>
    /// Marks the predictions a previous process accepted but did not finish (it crashed or was killed) as failed, with
    /// the reason, and sends their completed webhooks. Called once, before the server takes requests.
    /// </summary>
    public int RecoverInterrupted()
    {
        IReadOnlyList<PredictionView> unfinished = store.Unfinished();
        foreach (PredictionView v in unfinished)
        {
            string reason = v.StartedAt is null
                ? "The server stopped (crashed or was restarted) before this prediction started, so it never ran. Create it again."
                : "The server stopped (crashed or was restarted) while this prediction was running, so it did not finish. Create it again.";
            PredictionView final = v with
            {
                Status = PredictionStatus.Failed,
                Error = reason,
                CompletedAt = DateTimeOffset.UtcNow,
                Logs = v.Logs + reason + "\n",
            };
            store.Update(final);
            metrics.Completed(final.Status);
            webhooks.Send(final, "completed", Render(final));
        }

        if (unfinished.Count > 0)
        {
            logger.LogWarning("Marked {Count} prediction(s) interrupted by the last shutdown as failed", unfinished.Count);
        }

        return unfinished.Count;
    }

    /// <summary>Checks, stores and queues a prediction. Throws <see cref="ApiException"/>: 400 for bad input, 429 when the queue is full.</summary>
    public Prediction Create(PredictionOrder order)
    {
        if (shuttingDown)
        {
            throw new ApiException(StatusCodes.Status503ServiceUnavailable, "The server is shutting down.") { RetryAfterSeconds = 10 };
        }

        (GenerationRequest request, GenerationPlan plan) = host.Prepare(order.Spec);
        var view = new PredictionView
        {
            Id = NewId(),
            Kind = order.Kind,
            Model = order.Model,
            Version = order.Version,
            Status = PredictionStatus.Starting,
            Input = order.Input,
            CreatedAt = DateTimeOffset.UtcNow,
            Webhook = order.Webhook,
            WebhookEvents = order.WebhookEvents,
            BaseUrl = order.BaseUrl,
        };
        var prediction = new Prediction(view, request, plan);
        foreach (string note in order.Spec.Notes)
        {
            prediction.Log(note);
        }

        foreach (string warning in plan.Warnings)
        {
            prediction.Log($"Warning: {warning}");
        }

        prediction.Timeout = new CancellationTokenSource(options.RequestTimeout);
        prediction.Timeout.Token.Register(() => Stop(prediction, AbortReason.TimedOut));
        lock (queueGate)
        {
            if (queue.Count >= options.QueueSize)
            {
                metrics.Rejected();
                prediction.Dispose();
                int retryAfter = (int)Math.Clamp(Math.Ceiling(averageSeconds * (queue.Count + 1)), 1, 3600);
                throw new ApiException(StatusCodes.Status429TooManyRequests,
                    $"The queue is full ({queue.Count} predictions waiting); retry in about {retryAfter} s.") { RetryAfterSeconds = retryAfter };
            }

            // Stored before it is acknowledged or run: a crash from here on leaves a record that the restart reports.
            store.Insert(prediction.View);
            live[view.Id] = prediction;
            queue.AddLast(prediction);
        }

        available.Release();
        metrics.Created(order.Kind);
        logger.LogInformation("Prediction {Id} queued: {Width}x{Height}, {Steps} steps, {Images} image(s)", view.Id, plan.Width, plan.Height, plan.Steps, plan.NumImages);
        return prediction;
    }

    /// <summary>The prediction now: live when it is not finished, else from the database; null for an unknown id.</summary>
    public PredictionView? Get(string id) => live.TryGetValue(id, out Prediction? p) ? p.View : store.Get(id);

    /// <summary>The live prediction (not finished), or null.</summary>
    public Prediction? Live(string id) => live.GetValueOrDefault(id);

    public IReadOnlyList<PredictionView> List(int limit, string? before) =>
        store.List(limit, before).Select(v => live.TryGetValue(v.Id, out Prediction? p) ? p.View : v).ToList();

    /// <summary>Cancels a prediction: a waiting one leaves the queue, a running one stops within a step. Waits (a little) until it is final.</summary>
    public async Task<PredictionView?> CancelAsync(string id, CancellationToken cancellationToken)
    {
        if (!live.TryGetValue(id, out Prediction? p))
        {
            return store.Get(id);
        }

        Stop(p, AbortReason.Canceled);
        try
        {
            return await p.Completion.WaitAsync(TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return p.View;
        }
    }

    /// <summary>Stops a prediction for <paramref name="reason"/>: out of the queue when it waits, its token fired when it runs.</summary>
    public void Stop(Prediction p, AbortReason reason)
    {
        if (!p.RequestAbort(reason))
        {
            return;
        }

        bool removed;
        lock (queueGate)
        {
            removed = queue.Remove(p);
        }

        if (removed)
        {
            FinishAborted(p, p.AbortReason ?? reason);
            p.Dispose();
        }
    }

    /// <summary>A prediction in the API's shape, with links under <paramref name="baseUrl"/> (default: the one it was created with).</summary>
    public JsonObject RenderJson(PredictionView view, string? baseUrl = null) => PredictionJson.Render(view, baseUrl ?? view.BaseUrl, files);

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        shuttingDown = true;
        await base.StopAsync(cancellationToken).ConfigureAwait(false);
        List<Prediction> waiting;
        lock (queueGate)
        {
            waiting = [.. queue];
            queue.Clear();
        }

        foreach (Prediction p in waiting)
        {
            p.RequestAbort(AbortReason.Shutdown);
            FinishAborted(p, AbortReason.Shutdown);
            p.Dispose();
        }

        await webhooks.DrainAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false);
    }

    public override void Dispose()
    {
        available.Dispose();
        base.Dispose();
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            await WorkAsync(stoppingToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopped: also when the host stops without having started (a port in use), where the host would
            // otherwise log the cancellation as a failed service.
        }
    }

    private async Task WorkAsync(CancellationToken stoppingToken)
    {
        try
        {
            await host.WaitReadyAsync(stoppingToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            return;   // ModelHost logged it; /readyz reports it; creating predictions answers 503.
        }

        while (!stoppingToken.IsCancellationRequested)
        {
            await available.WaitAsync(stoppingToken).ConfigureAwait(false);
            List<Prediction> batch = [];
            lock (queueGate)
            {
                // The head of the queue, and the compatible predictions right behind it (FIFO is kept: none jumps an incompatible one).
                if (queue.First?.Value is { } head)
                {
                    queue.RemoveFirst();
                    batch.Add(head);
                    int images = head.Plan.NumImages;
                    while (queue.First?.Value is { } candidate && images + candidate.Plan.NumImages <= options.MaxBatchImages && Compatible(head, candidate))
                    {
                        queue.RemoveFirst();
                        batch.Add(candidate);
                        images += candidate.Plan.NumImages;
                    }

                    running = head;
                }
            }

            if (batch.Count == 0)
            {
                continue;   // it was canceled while it waited
            }

            // The semaphore counted each of them; the others are taken now.
            for (int k = 1; k < batch.Count; k++)
            {
                await available.WaitAsync(stoppingToken).ConfigureAwait(false);
            }

            try
            {
                await RunAsync(batch, stoppingToken).ConfigureAwait(false);
            }
            finally
            {
                running = null;
            }
        }
    }

    /// <summary>Requests that can share one pipeline run: the same size, steps, guidance, output encoding and prompt length.</summary>
    private static bool Compatible(Prediction a, Prediction b) =>
        a.Plan.Width == b.Plan.Width && a.Plan.Height == b.Plan.Height && a.Plan.Steps == b.Plan.Steps && a.Plan.Guidance == b.Plan.Guidance
        && a.Plan.Format == b.Plan.Format && a.Plan.Quality == b.Plan.Quality && a.Request.Rounding == b.Request.Rounding
        && a.Request.InitialLatents is null && b.Request.InitialLatents is null
        && a.Request.PromptEmbeddings is { } ea && b.Request.PromptEmbeddings is { } eb && ea.Tokens == eb.Tokens;

    /// <summary>
    /// Runs one batch (usually of one). A member that is canceled or times out is final at once (its result is
    /// dropped); the run itself stops within a step when no member is left to want it.
    /// </summary>
    private async Task RunAsync(List<Prediction> batch, CancellationToken stoppingToken)
    {
        var members = new List<Prediction>();
        DateTimeOffset startedAt = DateTimeOffset.UtcNow;
        foreach (Prediction p in batch)
        {
            PredictionView? started = p.Update(v => v with { Status = PredictionStatus.Processing, StartedAt = startedAt });
            if (started is null)
            {
                continue;
            }

            store.Update(started);
            webhooks.Send(started, "start", Render(started));
            GenerationPlan plan = p.Plan;
            p.Log($"Using seed: {plan.Seed}");
            p.Log(string.Create(CultureInfo.InvariantCulture,
                $"Generating {plan.NumImages} image(s) of {plan.Width}x{plan.Height}, {plan.Steps} steps, guidance {plan.Guidance}"));
            if (batch.Count > 1)
            {
                p.Log($"Batched with {batch.Count - 1} other prediction(s) into one run of {batch.Sum(b => b.Plan.NumImages)} image(s)");
            }

            members.Add(p);
        }

        if (members.Count == 0)
        {
            return;
        }

        using var run = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        int wanted = members.Count;
        var registrations = new List<CancellationTokenRegistration>();
        foreach (Prediction p in members)
        {
            registrations.Add(p.Abort.Token.Register(() =>
            {
                FinishAborted(p, p.AbortReason ?? AbortReason.Canceled);
                if (Interlocked.Decrement(ref wanted) == 0)
                {
                    run.Cancel();
                }
            }));
        }

        var progress = new StepProgress(members, metrics, view => webhooks.Send(view, "logs", Render(view)));
        try
        {
            GenerationResult result = await host.Pipeline.GenerateAsync(Combine(members), progress, run.Token).ConfigureAwait(false);
            GenerationTimings t = result.Timings;
            metrics.ImagesGenerated(result.Images.Count);
            metrics.Generation(t.Total.TotalSeconds);
            averageSeconds = (0.8 * averageSeconds) + (0.2 * t.Total.TotalSeconds / members.Count);
            int offset = 0;
            foreach (Prediction p in members)
            {
                GenerationPlan plan = p.Plan;
                int first = offset;
                offset += plan.NumImages;
                if (p.View.IsTerminal)
                {
                    continue;   // canceled or timed out while the others ran
                }

                var names = new List<string>();
                for (int k = 0; k < plan.NumImages; k++)
                {
                    names.Add(files.Write(p.Id, k, result.Images[first + k].Format, result.Images[first + k].Bytes));
                }

                p.Log(string.Create(CultureInfo.InvariantCulture, $"Done in {t.Total.TotalSeconds:F2} s ({t.StepsPerSecond:F2} it/s)"));
                DateTimeOffset now = DateTimeOffset.UtcNow;
                Finish(p, v => v with
                {
                    Status = PredictionStatus.Succeeded,
                    Output = names,
                    Metrics = new Dictionary<string, double>
                    {
                        ["predict_time"] = Math.Round(t.Total.TotalSeconds, 6),
                        ["total_time"] = Math.Round((now - v.CreatedAt).TotalSeconds, 6),
                        ["denoise_time"] = Math.Round(t.Denoise.TotalSeconds, 6),
                        ["decode_time"] = Math.Round(t.Decode.TotalSeconds, 6),
                        ["steps_per_second"] = Math.Round(t.StepsPerSecond, 4),
                        ["image_count"] = plan.NumImages,
                        ["batch_size"] = members.Count,
                        ["seed"] = plan.Seed,
                    },
                });
            }
        }
        catch (OperationCanceledException) when (run.IsCancellationRequested)
        {
            foreach (Prediction p in members)
            {
                FinishAborted(p, p.AbortReason ?? AbortReason.Shutdown);
            }
        }
        catch (Exception e)
        {
            logger.LogError(e, "Generation of {Ids} failed", string.Join(", ", members.Select(m => m.Id)));
            foreach (Prediction p in members)
            {
                p.Log($"Error: {e.Message}");
                Finish(p, v => v with { Status = PredictionStatus.Failed, Error = $"The generation failed: {e.Message}" });
            }
        }
        finally
        {
            foreach (CancellationTokenRegistration registration in registrations)
            {
                registration.Dispose();
            }

            foreach (Prediction p in members)
            {
                p.Dispose();
            }
        }
    }

    /// <summary>
    /// One request for a batch: each member's prompt embeddings repeated for its images, and each member's seeded noise
    /// (seed + k for its image k, as the pipeline would draw it) as the initial latents, so every image is the one the
    /// member would get alone (within the numerics of a batched forward).
    /// </summary>
    private GenerationRequest Combine(List<Prediction> members)
    {
        Prediction head = members[0];
        if (members.Count == 1)
        {
            return head.Request;
        }

        FluxPipeline pipeline = host.Pipeline;
        GenerationPlan plan = head.Plan;
        int total = members.Sum(m => m.Plan.NumImages);
        int tokens = head.Request.PromptEmbeddings!.Tokens;
        int context = pipeline.Transformer.Config.ContextInDim, vec = pipeline.Transformer.Config.VecInDim;
        int z = pipeline.Autoencoder.Config.ZChannels, perLatent = z * plan.LatentHeight * plan.LatentWidth;
        var txt = new float[(long)total * tokens * context];
        var pooled = new float[(long)total * vec];
        var latents = new float[(long)total * perLatent];
        int image = 0;
        foreach (Prediction m in members)
        {
            PromptEmbeddings e = m.Request.PromptEmbeddings!;
            float[] noise = LatentNoise.Generate(m.Plan.Seed, m.Plan.NumImages, z, plan.LatentHeight, plan.LatentWidth);
            for (int k = 0; k < m.Plan.NumImages; k++, image++)
            {
                int source = e.Batch == 1 ? 0 : k;
                Array.Copy(e.Txt, (long)source * tokens * context, txt, (long)image * tokens * context, (long)tokens * context);
                Array.Copy(e.Pooled, (long)source * vec, pooled, (long)image * vec, vec);
            }

            Array.Copy(noise, 0, latents, (long)(image - m.Plan.NumImages) * perLatent, noise.Length);
        }

        return head.Request with
        {
            Prompt = null,
            PromptEmbeddings = new PromptEmbeddings(txt, pooled, total, tokens),
            NumImages = total,
            InitialLatents = latents,
        };
    }

    private void FinishAborted(Prediction p, AbortReason reason)
    {
        (string status, string? error) = reason switch
        {
            AbortReason.Canceled => (PredictionStatus.Canceled, (string?)null),
            AbortReason.TimedOut => (PredictionStatus.Failed,
                string.Create(CultureInfo.InvariantCulture, $"{TimedOutMessage}: it did not finish within {options.RequestTimeout.TotalSeconds:0.###} s of being created (the server's request timeout).")),
            _ => (PredictionStatus.Failed, "The server shut down before this prediction finished. Create it again."),
        };
        p.Log(error ?? "Canceled.");
        Finish(p, v => v with { Status = status, Error = error });
    }

    private void Finish(Prediction p, Func<PredictionView, PredictionView> change)
    {
        PredictionView? final = p.Finish(v => change(v) with { CompletedAt = DateTimeOffset.UtcNow }, FinalEvents);
        if (final is null)
        {
            return;
        }

        try
        {
            store.Update(final);
        }
        finally
        {
            live.TryRemove(p.Id, out _);
            p.Release(final);
        }

        metrics.Completed(final.Status);
        string body = Render(final);
        if (final.Status == PredictionStatus.Succeeded)
        {
            webhooks.Send(final, "output", body);
        }

        webhooks.Send(final, "completed", body);
    }

    /// <summary>The last events of a finished prediction's stream: its outputs or error, then done.</summary>
    public IEnumerable<ServerEvent> FinalEvents(PredictionView final)
    {
        switch (final.Status)
        {
            case PredictionStatus.Succeeded:
                foreach (string name in final.Output ?? [])
                {
                    yield return new ServerEvent("output", files.Url(final.BaseUrl, final.Id, name));
                }

                yield return new ServerEvent("done", "{}");
                break;
            case PredictionStatus.Failed:
                yield return new ServerEvent("error", final.Error ?? "failed");
                yield return new ServerEvent("done", """{"reason":"error"}""");
                break;
            default:
                yield return new ServerEvent("done", """{"reason":"canceled"}""");
                break;
        }
    }

    private string Render(PredictionView view) => RenderJson(view).ToJsonString(ApiErrors.JsonOptions);

    private static string NewId() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(13));

    /// <summary>
    /// A step as a tqdm progress line, <c> 25%|██▌       | 3/12 [00:01, 2.47it/s]</c>: what the FLUX models on Replicate
    /// log, and what Replicate's clients parse into <c>prediction.progress</c>.
    /// </summary>
    internal static string ProgressLine(GenerationProgress value)
    {
        int total = Math.Max(1, value.TotalSteps);
        int percent = 100 * value.Step / total;
        int filled = 10 * value.Step / total;
        string bar = new string('█', filled) + new string(' ', 10 - filled);
        return string.Create(CultureInfo.InvariantCulture,
            $"{percent,3}%|{bar}| {value.Step}/{value.TotalSteps} [{(int)value.Elapsed.TotalMinutes:00}:{value.Elapsed.Seconds:00}, {value.StepsPerSecond:F2}it/s]");
    }

    /// <summary>Turns the pipeline's progress into log lines, stream events, step metrics and (at most every half second) logs webhooks, for every member of a run.</summary>
    private sealed class StepProgress(List<Prediction> members, ServerMetrics metrics, Action<PredictionView> logsWebhook) : IProgress<GenerationProgress>
    {
        private TimeSpan last;
        private DateTime lastWebhook = DateTime.MinValue;

        public void Report(GenerationProgress value)
        {
            bool step = value.Stage == GenerationStage.Denoising;
            if (step)
            {
                metrics.Step((value.Elapsed - last).TotalSeconds);
            }

            last = value.Elapsed;
            bool webhook = step && DateTime.UtcNow - lastWebhook >= TimeSpan.FromMilliseconds(500);
            if (webhook)
            {
                lastWebhook = DateTime.UtcNow;
            }

            string line = ProgressLine(value);
            string data = new JsonObject
            {
                ["stage"] = value.Stage.ToString().ToLowerInvariant(),
                ["step"] = value.Step,
                ["total"] = value.TotalSteps,
                ["steps_per_second"] = Math.Round(value.StepsPerSecond, 4),
            }.ToJsonString(ApiErrors.JsonOptions);
            foreach (Prediction p in members)
            {
                if (p.View.IsTerminal)
                {
                    continue;
                }

                if (step)
                {
                    p.Log(line);
                }

                p.Publish(new ServerEvent("progress", data));
                if (webhook)
                {
                    logsWebhook(p.View);
                }
            }
        }
    }
}
