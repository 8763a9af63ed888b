using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FluxNative.Server;

/// <summary>
/// A worker node (<c>flux serve --role worker</c>): leases jobs from the shared queue and runs them on its pipeline.
/// When it holds nothing it leases the oldest free job with up to <see cref="FluxServerOptions.MaxBatchImages"/> - 1
/// queued companions of its size, which the pipeline then batches. A heartbeat renews its leases every third of
/// <see cref="FluxServerOptions.LeaseDuration"/>; a job whose lease it lost (it stalled and another worker took the job
/// up) is stopped, and its outcome is not recorded. A worker that dies holds its jobs only until their leases run
/// out; another worker runs them again from the start (the seed is in the job, so the images are the same). The
/// outcome is recorded with <see cref="IPredictionStore.Complete"/>, which only the lease's holder can do: once.
/// </summary>
internal sealed class QueueWorker(
    FluxServerOptions options, ModelHost host, IPredictionStore store, OutputFiles files, WebhookDispatcher webhooks, ServerMetrics metrics,
    ILogger<QueueWorker> logger) : BackgroundService
{
    /// <summary>How often an idle worker asks for jobs when no notification woke it (a missed one, or a lease that ran out).</summary>
    internal static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(250);

    /// <summary>How often progress is written while a job runs (the API nodes stream it from there).</summary>
    private static readonly TimeSpan ProgressInterval = TimeSpan.FromMilliseconds(300);

    /// <summary>How often, at most, a running job's <c>logs</c> webhook is written (as in-process).</summary>
    private static readonly TimeSpan LogsWebhookInterval = TimeSpan.FromMilliseconds(500);

    private readonly ConcurrentDictionary<string, HeldJob> held = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim wake = new(0, 1);
    private readonly SemaphoreSlim beatNow = new(0, 1);
    private volatile string? problem;

    /// <summary>This worker's name in the leases.</summary>
    public string Id { get; } = options.WorkerId ?? $"{Environment.MachineName}:{Environment.ProcessId}";

    /// <summary>Jobs this worker holds now.</summary>
    public int Held => held.Count;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        FluxPipeline pipeline;
        try
        {
            pipeline = await host.WaitReadyAsync(stoppingToken).ConfigureAwait(false);
        }
        catch (Exception)
        {
            return;   // stopping, or the model failed to load (readiness says so)
        }

        logger.LogInformation("Worker {Worker} takes jobs from {Database}", Id, store.Location);
        Task heartbeat = HeartbeatAsync(stoppingToken);
        Task listening = store.ListenAsync(Notified, stoppingToken);
        while (!stoppingToken.IsCancellationRequested)
        {
            IReadOnlyList<LeasedJob> jobs = held.IsEmpty ? TryLease() : [];
            foreach (LeasedJob job in jobs)
            {
                var h = new HeldJob(job);
                held[job.Id] = h;
                _ = RunAsync(pipeline, h, stoppingToken);
            }

            if (jobs.Count == 0)
            {
                try
                {
                    await wake.WaitAsync(PollInterval, stoppingToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        }

        await Task.WhenAll(heartbeat, listening).ConfigureAwait(false);
    }

    /// <summary>A prediction changed somewhere: an idle worker asks for jobs; one that holds it renews now (it may be asked to stop).</summary>
    private void Notified(string id)
    {
        if (held.ContainsKey(id))
        {
            Release(beatNow);
        }
        else if (held.IsEmpty)
        {
            Release(wake);
        }

        static void Release(SemaphoreSlim signal)
        {
            try
            {
                signal.Release();
            }
            catch (SemaphoreFullException)
            {
                // Signalled already.
            }
        }
    }

    private IReadOnlyList<LeasedJob> TryLease()
    {
        try
        {
            IReadOnlyList<LeasedJob> jobs = store.Lease(Id, options.MaxBatchImages, options.LeaseDuration);
            Recovered();
            return jobs;
        }
        catch (Exception e) when (StorageMonitor.IsStorageFault(e))
        {
            Failed("lease jobs", e);
            return [];
        }
    }

    private async Task HeartbeatAsync(CancellationToken stoppingToken)
    {
        TimeSpan every = options.LeaseDuration / 3;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await beatNow.WaitAsync(every, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            HeldJob[] now = [.. held.Values];
            if (now.Length == 0)
            {
                continue;
            }

            try
            {
                LeaseRenewal renewal = store.Renew(Id, [.. now.Select(h => h.Job)], options.LeaseDuration);
                var kept = new HashSet<string>(renewal.Held, StringComparer.Ordinal);
                Recovered();
                foreach ((string id, JobAbort abort) in renewal.Aborts)
                {
                    if (held.TryGetValue(id, out HeldJob? h) && h.Abort is null)
                    {
                        h.Abort = abort;
                        h.Lost.Cancel();
                    }
                }

                foreach (HeldJob h in now.Where(h => !kept.Contains(h.Job.Id)))
                {
                    logger.LogWarning("Worker {Worker} lost its lease on {Id} (attempt {Attempt}): another worker runs it; this run stops and records nothing",
                        Id, h.Job.Id, h.Job.Attempt);
                    h.Lost.Cancel();
                }
            }
            catch (Exception e) when (StorageMonitor.IsStorageFault(e))
            {
                // The leases run on meanwhile: when the database is back before they expire, nothing is lost.
                Failed("renew its leases", e);
            }
        }
    }

    /// <summary>One job to its outcome, recorded once; nothing recorded when the lease was lost or the worker stops (the job then runs again elsewhere).</summary>
    private async Task RunAsync(FluxPipeline pipeline, HeldJob h, CancellationToken stoppingToken)
    {
        await Task.Yield();
        LeasedJob job = h.Job;
        var run = new JobRun(job.Prediction, this);
        run.Log(job.Attempt == 1
            ? $"Worker {Id} runs it (attempt 1)"
            : $"Worker {Id} runs it again from the start (attempt {job.Attempt}): the worker of the attempt before stopped before it finished");
        PredictionView final;
        // The request timeout counts from creation, waiting included. The API node that created the prediction keeps it
        // (it asks the queue to stop the job); the worker keeps it too, so that a job whose API node is gone still ends.
        TimeSpan left = job.Prediction.CreatedAt + options.RequestTimeout - DateTimeOffset.UtcNow;
        using var deadline = new CancellationTokenSource();
        if (left > TimeSpan.Zero)
        {
            deadline.CancelAfter(left);
        }
        else
        {
            deadline.Cancel();
        }

        try
        {
            using var abort = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken, h.Lost.Token, deadline.Token);
            GenerationSpec spec = JsonSerializer.Deserialize<GenerationSpec>(job.Spec)
                ?? throw new InvalidOperationException($"The job of {job.Id} has no spec.");
            (GenerationRequest request, GenerationPlan plan) = host.Prepare(spec);
            GenerationResult result = await pipeline.GenerateAsync(request, run.Progress(plan), abort.Token).ConfigureAwait(false);
            metrics.ImagesGenerated(result.Images.Count);
            metrics.Generation(result.Timings.Total.TotalSeconds);
            var names = new List<string>();
            for (int k = 0; k < result.Images.Count; k++)
            {
                names.Add(files.Write(job.Id, k, result.Images[k].Format, result.Images[k].Bytes));
            }

            if (result.PeakBatchImages > plan.NumImages)
            {
                run.Log($"Batched with other predictions: up to {result.PeakBatchImages} images per step");
            }

            run.Log(string.Create(CultureInfo.InvariantCulture, $"Done in {result.Timings.Total.TotalSeconds:F2} s ({result.Timings.StepsPerSecond:F2} it/s)"));
            DateTimeOffset now = DateTimeOffset.UtcNow;
            final = run.Final(v => v with
            {
                Status = PredictionStatus.Succeeded,
                Output = names,
                Metrics = PredictionService.ResultMetrics(result, plan, v.CreatedAt, now),
                CompletedAt = now,
            });
        }
        catch (OperationCanceledException) when (h.Abort is { } abort)
        {
            run.Log(abort.Error ?? "Canceled.");
            final = run.Final(v => v with { Status = abort.Status, Error = abort.Error, CompletedAt = DateTimeOffset.UtcNow });
        }
        catch (OperationCanceledException) when (h.Lost.IsCancellationRequested || stoppingToken.IsCancellationRequested)
        {
            held.TryRemove(job.Id, out _);
            return;
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            string error = PredictionService.TimedOutError(options.RequestTimeout);
            run.Log(error);
            final = run.Final(v => v with { Status = PredictionStatus.Failed, Error = error, CompletedAt = DateTimeOffset.UtcNow });
        }
        catch (Exception e) when (StorageMonitor.IsStorageFault(e))
        {
            string error = $"The images were generated but could not be saved: {StorageMonitor.Describe(e)}.";
            run.Log($"Error: {error}");
            final = run.Final(v => v with { Status = PredictionStatus.Failed, Error = error, CompletedAt = DateTimeOffset.UtcNow });
        }
        catch (Exception e)
        {
            logger.LogError(e, "Job {Id} failed on worker {Worker}", job.Id, Id);
            string message = e is ApiException api ? api.Message : $"The generation failed: {e.Message}";
            run.Log($"Error: {message}");
            final = run.Final(v => v with { Status = PredictionStatus.Failed, Error = message, CompletedAt = DateTimeOffset.UtcNow });
        }

        await RecordAsync(h, final, stoppingToken).ConfigureAwait(false);
        metrics.Completed(final.Status);
        held.TryRemove(job.Id, out _);
    }

    /// <summary>Records the outcome, retrying while the database is down, as long as the lease is this worker's.</summary>
    private async Task RecordAsync(HeldJob h, PredictionView final, CancellationToken stoppingToken)
    {
        while (true)
        {
            try
            {
                // The webhooks go into the outbox in the transaction that records the outcome: they are sent (by an API
                // node, now or when one is back) exactly when the outcome is recorded.
                string body = Render(final);
                List<WebhookDelivery> deliveries = final.Status == PredictionStatus.Succeeded
                    ? WebhookDispatcher.For(final, body, "output", "completed")
                    : WebhookDispatcher.For(final, body, "completed");
                if (!store.Complete(Id, h.Job, final, deliveries))
                {
                    logger.LogWarning("Job {Id} (attempt {Attempt}) finished on worker {Worker} after its lease was lost: another worker records it", h.Job.Id, h.Job.Attempt, Id);
                }

                Recovered();
                return;
            }
            catch (Exception e) when (StorageMonitor.IsStorageFault(e))
            {
                Failed($"record the outcome of {h.Job.Id}", e);
            }

            if ((h.Lost.IsCancellationRequested && h.Abort is null) || stoppingToken.IsCancellationRequested)
            {
                return;   // the lease is gone (another worker records), or the worker stops (the lease runs out, the job runs again)
            }

            try
            {
                await Task.Delay(StorageMonitor.RetryInterval, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <summary>
    /// A state on the way (processing, progress lines): written on a pool thread, a failure only logged (the final write
    /// carries it); then its webhook <paramref name="webhookEvent"/> (start, logs), when the prediction asked for it.
    /// </summary>
    private void SaveLater(PredictionView view, string? webhookEvent = null) => ThreadPool.QueueUserWorkItem(state =>
    {
        try
        {
            store.Update(state.View);
        }
        catch (Exception e) when (StorageMonitor.IsStorageFault(e))
        {
            Failed("write progress", e);
        }

        if (state.Event is { } eventName)
        {
            webhooks.Send(state.View, eventName, Render(state.View));
        }
    }, (View: view, Event: webhookEvent), preferLocal: false);

    /// <summary>The prediction as the API answers it (a webhook's body): its links signed with the key every node shares.</summary>
    private string Render(PredictionView view) => PredictionJson.Render(view, view.BaseUrl, files).ToJsonString(ApiErrors.JsonOptions);

    private void Failed(string what, Exception e)
    {
        string now = $"Worker {Id} cannot {what}: {StorageMonitor.Describe(e)}";
        if (problem is null)
        {
            logger.LogError("{Problem}", now);
        }

        problem = now;
    }

    private void Recovered()
    {
        if (problem is not null)
        {
            problem = null;
            logger.LogInformation("Worker {Worker} reaches the database again", Id);
        }
    }

    private sealed class HeldJob(LeasedJob job)
    {
        public LeasedJob Job { get; } = job;

        /// <summary>Fires when the heartbeat finds the lease gone, or the job asked to stop (<see cref="Abort"/>).</summary>
        public CancellationTokenSource Lost { get; } = new();

        /// <summary>Why the job was asked to stop (canceled, timed out), or null.</summary>
        public volatile JobAbort? Abort;
    }

    /// <summary>A running job's state and logs as the worker writes them (the API nodes read them from the database).</summary>
    private sealed class JobRun(PredictionView leased, QueueWorker worker)
    {
        private readonly object gate = new();
        private readonly StringBuilder logs = new(leased.Logs);
        private PredictionView view = leased with { Status = PredictionStatus.Starting, StartedAt = null };
        private DateTime lastSave = DateTime.MinValue;
        private DateTime lastLogsWebhook = DateTime.MinValue;

        public void Log(string line)
        {
            lock (gate)
            {
                logs.Append(line).Append('\n');
            }
        }

        public PredictionView Final(Func<PredictionView, PredictionView> finish)
        {
            lock (gate)
            {
                return finish(view) with { Logs = logs.ToString() };
            }
        }

        public IProgress<GenerationProgress> Progress(GenerationPlan plan) => new Reporter(this, plan);

        private void Started(GenerationPlan plan)
        {
            PredictionView started;
            lock (gate)
            {
                view = view with { Status = PredictionStatus.Processing, StartedAt = DateTimeOffset.UtcNow };
                logs.Append(CultureInfo.InvariantCulture, $"Using seed: {plan.Seed}\n");
                logs.Append(CultureInfo.InvariantCulture, $"Generating {plan.NumImages} image(s) of {plan.Width}x{plan.Height}, {plan.Steps} steps, guidance {plan.Guidance}\n");
                started = view with { Logs = logs.ToString() };
                lastSave = DateTime.UtcNow;
            }

            worker.SaveLater(started, "start");
        }

        private void Step(GenerationProgress value)
        {
            PredictionView? save = null;
            string? webhookEvent = null;
            lock (gate)
            {
                logs.Append(PredictionService.ProgressLine(value)).Append('\n');
                if (DateTime.UtcNow - lastSave >= ProgressInterval)
                {
                    lastSave = DateTime.UtcNow;
                    save = view with { Logs = logs.ToString() };
                    if (lastSave - lastLogsWebhook >= LogsWebhookInterval)
                    {
                        lastLogsWebhook = lastSave;
                        webhookEvent = "logs";
                    }
                }
            }

            if (save is not null)
            {
                worker.SaveLater(save, webhookEvent);
            }
        }

        private sealed class Reporter(JobRun run, GenerationPlan plan) : IProgress<GenerationProgress>
        {
            public void Report(GenerationProgress value)
            {
                if (value.Stage == GenerationStage.Preparing)
                {
                    run.Started(plan);
                }
                else if (value.Stage == GenerationStage.Denoising)
                {
                    run.Step(value);
                }
            }
        }
    }
}
