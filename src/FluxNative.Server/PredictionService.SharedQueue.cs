using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace FluxNative.Server;

/// <summary>
/// An API node's side of the shared queue (<c>--role api</c>): queuing a prediction, following it while workers run it,
/// and stopping one (cancel, timeout) through the queue.
/// </summary>
internal sealed partial class PredictionService
{
    /// <summary>
    /// An API node's create: the prediction and its job go on the shared queue (the spec with the seed drawn, so that a
    /// worker's run, and a run again after a worker died, makes the images this plan says), and it stays live here,
    /// following what the workers write (<see cref="FollowQueueAsync"/>) for waits and streams.
    /// </summary>
    private Prediction Queue(PredictionOrder order, Prediction prediction)
    {
        GenerationPlan plan = prediction.Plan;
        string spec = JsonSerializer.Serialize(order.Spec with { Seed = plan.Seed });
        live[prediction.Id] = prediction;
        try
        {
            storage.Enqueue(prediction.View, BatchKey(plan), spec);
        }
        catch (ApiException)
        {
            live.TryRemove(prediction.Id, out _);
            lock (queueGate)
            {
                waiting.Remove(prediction);
            }

            metrics.Rejected();
            prediction.Dispose();
            throw;
        }

        metrics.Created(order.Kind);
        logger.LogInformation("Prediction {Id} queued for the workers: {Width}x{Height}, {Steps} steps, {Images} image(s)", prediction.Id, plan.Width, plan.Height, plan.Steps, plan.NumImages);
        return prediction;
    }

    /// <summary>
    /// The prediction to wait on or stream: live here, or (on an API node) one that another node created, or that this
    /// node created before it restarted, followed from now on as this node's own are (<see cref="FollowQueueAsync"/>)
    /// until it is final. Null when the id is unknown or the prediction final. A database that cannot be read is a 503.
    /// </summary>
    public Prediction? Follow(string id)
    {
        if (live.TryGetValue(id, out Prediction? p) || options.Role != ServerRole.Api)
        {
            return p;
        }

        PredictionView? stored = storage.Read(s => s.Get(id));
        if (stored is null || stored.IsTerminal)
        {
            return null;
        }

        // No request nor plan: those are the creating node's (and the worker's, in the job's spec).
        var follower = new Prediction(stored, null!, null!) { CreatedElsewhere = true };
        Prediction followed = live.GetOrAdd(id, follower);
        if (followed != follower)
        {
            follower.Dispose();
            return followed;
        }

        Refresh(id);   // a change between the read and the follow told no one
        return follower;
    }

    /// <summary>Jobs with one key can share a worker's batch: the pipeline batches predictions of one size.</summary>
    internal static string BatchKey(GenerationPlan plan) => string.Create(CultureInfo.InvariantCulture, $"{plan.Width}x{plan.Height}");

    /// <summary>
    /// An API node follows the predictions it queued: each change a worker writes is told by the database
    /// (LISTEN/NOTIFY) and read then, and every second all are read anyway (a notification missed while the database was
    /// away). New log lines go to the streams; processing and the final state as the in-process path has them. Their
    /// webhooks are not this node's: the worker writes them into the outbox with the state (the completed one in the
    /// transaction that records the outcome), so they are sent even when this node is gone.
    /// </summary>
    private async Task FollowQueueAsync(CancellationToken stoppingToken)
    {
        Task listening = store.ListenAsync(id =>
        {
            if (live.ContainsKey(id))
            {
                ThreadPool.QueueUserWorkItem(static state => state.Service.Refresh(state.Id), (Service: this, Id: id), preferLocal: false);
            }
        }, stoppingToken);
        while (true)
        {
            try
            {
                await Task.Delay(StorageMonitor.RetryInterval, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }

            foreach (string id in live.Keys)
            {
                Refresh(id);
            }
        }

        await listening.ConfigureAwait(false);
    }

    /// <summary>Reads a followed prediction and applies what changed.</summary>
    private void Refresh(string id)
    {
        if (!live.TryGetValue(id, out Prediction? p))
        {
            return;
        }

        PredictionView? stored;
        try
        {
            stored = store.Get(id);
        }
        catch (Exception e) when (StorageMonitor.IsStorageFault(e))
        {
            return;   // the next read gets it; readiness tells the fault
        }

        if (stored is null)
        {
            return;
        }

        lock (p)
        {
            string logs = p.View.Logs;
            if (stored.Logs.Length > logs.Length && stored.Logs.StartsWith(logs, StringComparison.Ordinal))
            {
                foreach (string line in stored.Logs[logs.Length..].Split('\n', StringSplitOptions.RemoveEmptyEntries))
                {
                    p.Log(line);
                    if (ProgressOf(line) is { } progress)
                    {
                        p.Publish(new ServerEvent("progress", progress));
                    }
                }
            }

            if (stored.Status != PredictionStatus.Starting && p.View.Status == PredictionStatus.Starting)
            {
                lock (queueGate)
                {
                    if (waiting.Remove(p))
                    {
                        running.Add(p);
                    }
                }

                p.Update(v => v with { Status = PredictionStatus.Processing, StartedAt = stored.StartedAt ?? DateTimeOffset.UtcNow });
            }

            if (!stored.IsTerminal)
            {
                return;
            }

            PredictionView? final = p.Finish(_ => stored, FinalEvents);
            if (final is null)
            {
                return;
            }

            live.TryRemove(id, out _);
            lock (queueGate)
            {
                waiting.Remove(p);
                running.Remove(p);
            }

            p.Release(final);
            p.Dispose();
            if (!p.CreatedElsewhere)
            {
                metrics.Completed(final.Status);   // counted once, by the node that created it
            }
        }
    }

    /// <summary>
    /// The <c>progress</c> event of a worker's step line (<see cref="ProgressLine"/>, the tqdm line the logs carry), as the
    /// in-process stream has it; null for any other line.
    /// </summary>
    internal static string? ProgressOf(string line)
    {
        System.Text.RegularExpressions.Match m = ProgressPattern().Match(line);
        if (!m.Success)
        {
            return null;
        }

        return new System.Text.Json.Nodes.JsonObject
        {
            ["stage"] = "denoising",
            ["step"] = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture),
            ["total"] = int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture),
            ["steps_per_second"] = double.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture),
        }.ToJsonString(ApiErrors.JsonOptions);
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"^ *\d+%\|[█ ]{10}\| (\d+)/(\d+) \[\d+:\d\d, (\d+\.\d+)it/s\]$")]
    private static partial System.Text.RegularExpressions.Regex ProgressPattern();

    /// <summary>An API node's cancel of a prediction it does not follow (another API node created it): through the queue, then read back until final (up to 10 s).</summary>
    private async Task<PredictionView?> CancelQueuedAsync(string id, CancellationToken cancellationToken)
    {
        PredictionView? current = Get(id);
        if (current is null || current.IsTerminal)
        {
            return current;
        }

        PredictionView canceled = AbortedState(current, AbortReason.Canceled);
        storage.Read(s => s.Abort(id, canceled, WebhookDispatcher.For(canceled, Render(canceled), "completed")));
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(10))
        {
            current = Get(id);
            if (current is null || current.IsTerminal)
            {
                break;
            }

            await Task.Delay(100, cancellationToken).ConfigureAwait(false);
        }

        return current;
    }

    /// <summary>The final state of a prediction stopped for <paramref name="reason"/> (as <see cref="FinishAborted"/> writes it in-process).</summary>
    private PredictionView AbortedState(PredictionView view, AbortReason reason)
    {
        (string status, string? error) = AbortedStatus(reason);
        return view with { Status = status, Error = error, Logs = view.Logs + (error ?? "Canceled.") + "\n", CompletedAt = DateTimeOffset.UtcNow };
    }
}
