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
/// The predictions in front of the pipeline: a bound on how many may wait (429 beyond it), a deadline per prediction,
/// cancellation, persistence at every status change (through <see cref="StorageMonitor"/>, so that a storage fault
/// fails only the request it concerns), events for the streams, webhooks and metrics. Every accepted
/// prediction goes straight to <see cref="FluxPipeline.GenerateAsync"/>, whose scheduler batches them (same size:
/// one forward per step, joining and leaving at step boundaries) in arrival order; a prediction turns "processing"
/// when its first step starts. The endpoints are thin calls into this.
/// </summary>
internal sealed partial class PredictionService : BackgroundService
{
    /// <summary>How the error of a prediction that ran out of time begins.</summary>
    public const string TimedOutMessage = "The prediction timed out";

    /// <summary>The error of a prediction that ran out of <paramref name="timeout"/> (the API node's, or a worker's for a job whose API node is gone).</summary>
    internal static string TimedOutError(TimeSpan timeout) =>
        string.Create(CultureInfo.InvariantCulture, $"{TimedOutMessage}: it did not finish within {timeout.TotalSeconds:0.###} s of being created (the server's request timeout).");

    private readonly FluxServerOptions options;
    private readonly ModelHost host;
    private readonly IPredictionStore store;
    private readonly StorageMonitor storage;
    private readonly OutputFiles files;
    private readonly WebhookDispatcher webhooks;
    private readonly ServerMetrics metrics;
    private readonly ILogger<PredictionService> logger;
    private readonly ConcurrentDictionary<string, Prediction> live = new(StringComparer.Ordinal);
    private readonly HashSet<Prediction> waiting = [];
    private readonly List<Prediction> running = [];
    private readonly object queueGate = new();
    private volatile bool shuttingDown;
    private double averageSeconds = 5;

    public PredictionService(
        FluxServerOptions options, ModelHost host, IPredictionStore store, StorageMonitor storage, OutputFiles files, WebhookDispatcher webhooks,
        ServerMetrics metrics, ILogger<PredictionService> logger)
    {
        this.options = options;
        this.host = host;
        this.store = store;
        this.storage = storage;
        this.files = files;
        this.webhooks = webhooks;
        this.metrics = metrics;
        this.logger = logger;
        metrics.Observe(() => QueueLength, () => RunningCount);
    }

    /// <summary>Predictions accepted whose steps have not started.</summary>
    public int QueueLength
    {
        get
        {
            lock (queueGate)
            {
                return waiting.Count;
            }
        }
    }

    /// <summary>Predictions whose steps run now (batched together).</summary>
    public int RunningCount
    {
        get
        {
            lock (queueGate)
            {
                return running.Count;
            }
        }
    }

    /// <summary>
    /// Marks the predictions a previous process accepted but did not finish (it crashed or was killed) as failed, with
    /// the reason, and sends their completed webhooks. Called once, before the server takes requests.
    /// </summary>
    public int RecoverInterrupted()
    {
        if (options.Role != ServerRole.All)
        {
            return 0;   // the queue's leases take care of jobs whose worker died; nothing here is this node's alone
        }

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

    /// <summary>
    /// Checks, stores and queues a prediction. Throws <see cref="ApiException"/>: 400 for bad input, 429 when the queue is
    /// full, 503 when it cannot be stored.
    /// </summary>
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
            if (waiting.Count >= options.QueueSize)
            {
                metrics.Rejected();
                prediction.Dispose();
                int retryAfter = (int)Math.Clamp(Math.Ceiling(averageSeconds * (waiting.Count + 1)), 1, 3600);
                throw new ApiException(StatusCodes.Status429TooManyRequests,
                    $"The queue is full ({waiting.Count} predictions waiting); retry in about {retryAfter} s.") { RetryAfterSeconds = retryAfter };
            }

            waiting.Add(prediction);   // its place, held while it is stored
        }

        if (options.Role == ServerRole.Api)
        {
            return Queue(order, prediction);
        }

        // Stored before it is acknowledged or run: a crash from here on leaves a record that the restart reports. Not
        // under the queue's lock: a slow or locked database must not hold up the pipeline's threads, which take it.
        try
        {
            storage.Insert(prediction.View);
        }
        catch (ApiException)
        {
            lock (queueGate)
            {
                waiting.Remove(prediction);
            }

            metrics.Rejected();
            prediction.Dispose();
            throw;
        }

        live[view.Id] = prediction;
        _ = RunAsync(prediction);
        metrics.Created(order.Kind);
        logger.LogInformation("Prediction {Id} queued: {Width}x{Height}, {Steps} steps, {Images} image(s)", view.Id, plan.Width, plan.Height, plan.Steps, plan.NumImages);
        return prediction;
    }

    /// <summary>
    /// The prediction now: live when it is not finished, else from the database (or from memory while its final state
    /// waits for the database); null for an unknown id. A database that cannot be read is a 503.
    /// </summary>
    public PredictionView? Get(string id) =>
        live.TryGetValue(id, out Prediction? p) ? p.View : storage.Unsaved(id) ?? storage.Read(s => s.Get(id));

    /// <summary>The live prediction (not finished), or null.</summary>
    public Prediction? Live(string id) => live.GetValueOrDefault(id);

    public IReadOnlyList<PredictionView> List(int limit, string? before) =>
        storage.Read(s => s.List(limit, before)).Select(v => live.TryGetValue(v.Id, out Prediction? p) ? p.View : storage.Unsaved(v.Id) ?? v).ToList();

    /// <summary>Cancels a prediction: a waiting one leaves the queue, a running one stops within a step. Waits (a little) until it is final.</summary>
    public async Task<PredictionView?> CancelAsync(string id, CancellationToken cancellationToken)
    {
        if (options.Role == ServerRole.Api && !live.ContainsKey(id))
        {
            return await CancelQueuedAsync(id, cancellationToken).ConfigureAwait(false);
        }

        if (!live.TryGetValue(id, out Prediction? p))
        {
            return Get(id);
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

    /// <summary>
    /// Stops a prediction for <paramref name="reason"/>: its token fires, which the pipeline answers at once (out of its
    /// queue, or out of the batch at the next step). On an API node the queue is told instead: a waiting job ends now, a
    /// running one at its worker's next heartbeat (at once when the worker hears the notification).
    /// </summary>
    public void Stop(Prediction p, AbortReason reason)
    {
        if (!p.RequestAbort(reason) || options.Role != ServerRole.Api)
        {
            return;
        }

        PredictionView final = AbortedState(p.View, reason);
        ThreadPool.QueueUserWorkItem(state =>
        {
            try
            {
                // A waiting job ends here: its completed webhook goes into the outbox with the final state (a running one's, the worker's).
                AbortOutcome outcome = store.Abort(state.Id, state, WebhookDispatcher.For(state, Render(state), "completed"));
                logger.LogInformation("Prediction {Id}: {Status} asked of the queue ({Outcome})", state.Id, state.Status, outcome);
                Refresh(state.Id);
            }
            catch (Exception e) when (StorageMonitor.IsStorageFault(e))
            {
                logger.LogError("Prediction {Id} could not be stopped: {Reason}", state.Id, StorageMonitor.Describe(e));
            }
        }, final, preferLocal: false);
    }

    /// <summary>A prediction in the API's shape, with links under <paramref name="baseUrl"/> (default: the one it was created with).</summary>
    public JsonObject RenderJson(PredictionView view, string? baseUrl = null) => PredictionJson.Render(view, baseUrl ?? view.BaseUrl, files);

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        shuttingDown = true;
        await base.StopAsync(cancellationToken).ConfigureAwait(false);
        if (options.Role == ServerRole.Api)
        {
            // The workers run them on; the database has them. Only this node's webhooks end here.
            await webhooks.DrainAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false);
            return;
        }

        List<Prediction> unfinished = [.. live.Values];
        foreach (Prediction p in unfinished)
        {
            p.RequestAbort(AbortReason.Shutdown);
        }

        // Each answers its token within a step; what has not by then is reported interrupted at the next start.
        await Task.WhenAll(unfinished.Select(p => p.Completion)).WaitAsync(TimeSpan.FromSeconds(5), CancellationToken.None)
            .ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
        storage.SaveBeforeExit();
        await webhooks.DrainAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false);
    }

    // In-process, the work happens in the pipeline's threads and predictions start from Create; an API node follows
    // the queue.
    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        options.Role == ServerRole.Api ? FollowQueueAsync(stoppingToken) : Task.CompletedTask;

    /// <summary>
    /// One prediction through the pipeline, to its final state. Never throws: every outcome (success, cancel, timeout,
    /// shutdown, failure) is recorded on the prediction.
    /// </summary>
    private async Task RunAsync(Prediction p)
    {
        var progress = new StepProgress(p, metrics, () => Started(p), view => webhooks.Send(view, "logs", Render(view)));
        try
        {
            GenerationResult result = await host.Pipeline.GenerateAsync(p.Request, progress, p.Abort.Token).ConfigureAwait(false);
            Succeed(p, result);
        }
        catch (OperationCanceledException) when (p.Abort.IsCancellationRequested)
        {
            FinishAborted(p, p.AbortReason ?? AbortReason.Canceled);
        }
        catch (ObjectDisposedException) when (shuttingDown)
        {
            FinishAborted(p, AbortReason.Shutdown);
        }
        catch (Exception e)
        {
            logger.LogError(e, "Generation of {Id} failed", p.Id);
            p.Log($"Error: {e.Message}");
            Finish(p, v => v with { Status = PredictionStatus.Failed, Error = $"The generation failed: {e.Message}" });
        }
        finally
        {
            lock (queueGate)
            {
                waiting.Remove(p);
                running.Remove(p);
            }

            p.Dispose();
        }
    }

    /// <summary>Its first step started (on the pipeline's thread): now "processing", with the start webhook.</summary>
    private void Started(Prediction p)
    {
        lock (queueGate)
        {
            if (!waiting.Remove(p))
            {
                return;
            }

            running.Add(p);
        }

        PredictionView? started = p.Update(v => v with { Status = PredictionStatus.Processing, StartedAt = DateTimeOffset.UtcNow });
        if (started is null)
        {
            return;
        }

        storage.SaveLater(started);
        webhooks.Send(started, "start", Render(started));
        GenerationPlan plan = p.Plan;
        p.Log($"Using seed: {plan.Seed}");
        p.Log(string.Create(CultureInfo.InvariantCulture,
            $"Generating {plan.NumImages} image(s) of {plan.Width}x{plan.Height}, {plan.Steps} steps, guidance {plan.Guidance}"));
    }

    private void Succeed(Prediction p, GenerationResult result)
    {
        GenerationTimings t = result.Timings;
        GenerationPlan plan = p.Plan;
        metrics.ImagesGenerated(result.Images.Count);
        metrics.Generation(t.Total.TotalSeconds);
        averageSeconds = (0.8 * averageSeconds) + (0.2 * t.Total.TotalSeconds);
        var names = new List<string>();
        try
        {
            for (int k = 0; k < result.Images.Count; k++)
            {
                names.Add(files.Write(p.Id, k, result.Images[k].Format, result.Images[k].Bytes));
            }
        }
        catch (Exception e) when (StorageMonitor.IsStorageFault(e))
        {
            storage.OutputFailed(e);
            string error = $"The images were generated but could not be saved: {StorageMonitor.Describe(e)}.";
            p.Log($"Error: {error}");
            Finish(p, v => v with { Status = PredictionStatus.Failed, Error = error });
            return;
        }

        if (result.PeakBatchImages > plan.NumImages)
        {
            p.Log($"Batched with other predictions: up to {result.PeakBatchImages} images per step");
        }

        if (plan.StepCache is not null)
        {
            p.Log(string.Create(CultureInfo.InvariantCulture,
                $"Speed mode {SpeedModes.Name(plan.SpeedMode)}: {result.BlocksComputed} of {result.BlocksTotal} transformer blocks ran ({result.CachedSteps} image-steps reused cached work)"));
        }

        p.Log(string.Create(CultureInfo.InvariantCulture, $"Done in {t.Total.TotalSeconds:F2} s ({t.StepsPerSecond:F2} it/s)"));
        DateTimeOffset now = DateTimeOffset.UtcNow;
        Finish(p, v => v with
        {
            Status = PredictionStatus.Succeeded,
            Output = names,
            Metrics = ResultMetrics(result, plan, v.CreatedAt, now),
        });
    }

    /// <summary>A finished generation's <c>metrics</c> (Replicate's names, and ours).</summary>
    internal static Dictionary<string, double> ResultMetrics(GenerationResult result, GenerationPlan plan, DateTimeOffset createdAt, DateTimeOffset now)
    {
        GenerationTimings t = result.Timings;
        return new Dictionary<string, double>
        {
            ["predict_time"] = Math.Round(t.Total.TotalSeconds, 6),
            ["total_time"] = Math.Round((now - createdAt).TotalSeconds, 6),
            ["denoise_time"] = Math.Round(t.Denoise.TotalSeconds, 6),
            ["decode_time"] = Math.Round(t.Decode.TotalSeconds, 6),
            ["steps_per_second"] = Math.Round(t.StepsPerSecond, 4),
            ["image_count"] = plan.NumImages,
            ["batch_size"] = result.PeakBatchImages,
            ["transformer_blocks_share"] = Math.Round(result.BlocksComputedShare, 4),
            ["seed"] = plan.Seed,
        };
    }

    private void FinishAborted(Prediction p, AbortReason reason)
    {
        (string status, string? error) = AbortedStatus(reason);
        p.Log(error ?? "Canceled.");
        Finish(p, v => v with { Status = status, Error = error });
    }

    private (string Status, string? Error) AbortedStatus(AbortReason reason)
    {
        return reason switch
        {
            AbortReason.Canceled => (PredictionStatus.Canceled, (string?)null),
            AbortReason.TimedOut => (PredictionStatus.Failed, TimedOutError(options.RequestTimeout)),
            _ => (PredictionStatus.Failed, "The server shut down before this prediction finished. Create it again."),
        };
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
            // A final state the database cannot take now stays in memory (answered from there) until it can.
            storage.Save(final);
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

    /// <summary>Turns the pipeline's progress into the start, log lines, stream events, step metrics and (at most every half second) logs webhooks.</summary>
    private sealed class StepProgress(Prediction p, ServerMetrics metrics, Action started, Action<PredictionView> logsWebhook) : IProgress<GenerationProgress>
    {
        private TimeSpan last;
        private DateTime lastWebhook = DateTime.MinValue;

        public void Report(GenerationProgress value)
        {
            if (value.Stage == GenerationStage.Preparing)
            {
                started();
                last = value.Elapsed;
                return;
            }

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
            if (p.View.IsTerminal)
            {
                return;
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
