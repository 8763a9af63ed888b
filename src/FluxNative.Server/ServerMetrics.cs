using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

namespace FluxNative.Server;

/// <summary>
/// The server's counters, on a <see cref="System.Diagnostics.Metrics.Meter"/> named <c>FluxNative.Server</c> (read it with
/// <c>dotnet-counters monitor -n flux --counters FluxNative.Server</c> or any OpenTelemetry exporter), and as Prometheus
/// text at <c>GET /metrics</c>.
/// </summary>
public sealed class ServerMetrics
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "FluxNative.Server";

    private readonly Counter<long> images;
    private readonly Counter<long> createdCounter;
    private readonly Counter<long> completedCounter;
    private readonly Counter<long> rejected;
    private readonly Histogram<double> stepDuration;
    private readonly Histogram<double> generationDuration;
    private readonly object gate = new();
    private readonly Dictionary<string, long> created = new(StringComparer.Ordinal) { [PredictionKind.Replicate] = 0, [PredictionKind.OpenAi] = 0 };
    private readonly Dictionary<string, long> completed = new(StringComparer.Ordinal)
    {
        [PredictionStatus.Succeeded] = 0, [PredictionStatus.Failed] = 0, [PredictionStatus.Canceled] = 0,
    };

    private readonly PrometheusHistogram steps = new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]);
    private readonly PrometheusHistogram generations = new([0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600]);
    private long rejectedTotal;
    private long imagesTotal;
    private Func<int> queueLength = () => 0;
    private Func<int> running = () => 0;
    private Func<QueueState>? sharedQueue;
    private Func<int>? heldJobs;
    private Func<OutboxState>? outbox;
    private readonly Counter<long> webhookAttempts;
    private readonly Dictionary<string, long> webhookOutcomes = new(StringComparer.Ordinal) { ["delivered"] = 0, ["retried"] = 0, ["failed"] = 0 };

    internal ServerMetrics(IMeterFactory factory)
    {
        Meter = factory.Create(new MeterOptions(MeterName));
        images = Meter.CreateCounter<long>("flux.images.generated", "{image}", "Images generated.");
        createdCounter = Meter.CreateCounter<long>("flux.predictions.created", "{prediction}", "Predictions accepted, by API.");
        completedCounter = Meter.CreateCounter<long>("flux.predictions.completed", "{prediction}", "Predictions finished, by final status.");
        rejected = Meter.CreateCounter<long>("flux.predictions.rejected", "{prediction}", "Predictions refused because the queue was full.");
        stepDuration = Meter.CreateHistogram<double>("flux.step.duration", "s", "Wall time of one denoising step.");
        generationDuration = Meter.CreateHistogram<double>("flux.generation.duration", "s", "Wall time of one generation (prepare to encode).");
        webhookAttempts = Meter.CreateCounter<long>("flux.webhooks.attempts", "{attempt}", "Webhook delivery attempts this node made, by outcome (delivered, retried, failed: given up).");
        Meter.CreateObservableGauge("flux.queue.length", () => queueLength(), "{prediction}", "Predictions waiting for the pipeline.");
        Meter.CreateObservableGauge("flux.generation.active", () => running(), "{prediction}", "Predictions the pipeline is running (0 or 1).");
    }

    /// <summary>The meter (one per server).</summary>
    public Meter Meter { get; }

    internal void Observe(Func<int> queue, Func<int> active)
    {
        queueLength = queue;
        running = active;
    }

    /// <summary>A node of a shared queue (<c>--role api|worker</c>): the queue's state, read at each scrape, and on a worker the jobs it holds.</summary>
    internal void ObserveSharedQueue(Func<QueueState> queue, Func<int>? held)
    {
        sharedQueue = queue;
        heldJobs = held;
    }

    /// <summary>The webhook outbox's state, read at each scrape (from the database, shared by every node).</summary>
    internal void ObserveOutbox(Func<OutboxState> state) => outbox = state;

    /// <summary>One webhook attempt this node made, and what came of it.</summary>
    internal void WebhookAttempt(DeliveryOutcome outcome)
    {
        string name = outcome switch { DeliveryOutcome.Delivered => "delivered", DeliveryOutcome.Retry => "retried", _ => "failed" };
        webhookAttempts.Add(1, new KeyValuePair<string, object?>("outcome", name));
        lock (gate)
        {
            webhookOutcomes[name]++;
        }
    }

    internal void Created(string api)
    {
        createdCounter.Add(1, new KeyValuePair<string, object?>("api", api));
        lock (gate)
        {
            created[api] = created.GetValueOrDefault(api) + 1;
        }
    }

    internal void Completed(string status)
    {
        completedCounter.Add(1, new KeyValuePair<string, object?>("status", status));
        lock (gate)
        {
            completed[status] = completed.GetValueOrDefault(status) + 1;
        }
    }

    internal void Rejected()
    {
        rejected.Add(1);
        Interlocked.Increment(ref rejectedTotal);
    }

    internal void ImagesGenerated(int count)
    {
        images.Add(count);
        Interlocked.Add(ref imagesTotal, count);
    }

    internal void Step(double seconds)
    {
        stepDuration.Record(seconds);
        lock (gate)
        {
            steps.Observe(seconds);
        }
    }

    internal void Generation(double seconds)
    {
        generationDuration.Record(seconds);
        lock (gate)
        {
            generations.Observe(seconds);
        }
    }

    /// <summary>
    /// The metrics in Prometheus' text exposition format (version 0.0.4): every family with its <c># HELP</c> and
    /// <c># TYPE</c>, the durations as histograms with cumulative buckets, <c>_sum</c> and <c>_count</c>.
    /// </summary>
    internal string Prometheus()
    {
        var text = new StringBuilder();
        QueueState? shared = null;
        OutboxState? deliveries = null;
        try
        {
            shared = sharedQueue?.Invoke();
            deliveries = outbox?.Invoke();
        }
        catch (Exception e) when (StorageMonitor.IsStorageFault(e))
        {
            // The database is down: the queue's and the outbox's families are left out (readiness says why).
        }

        lock (gate)
        {
            if (shared is not null)
            {
                Family(text, "flux_queue_jobs_waiting", "gauge", "Jobs in the shared queue that no worker holds.");
                Sample(text, "flux_queue_jobs_waiting", null, shared.Waiting);
                Family(text, "flux_queue_jobs_leased", "gauge", "Jobs in the shared queue that a worker holds (a live lease).");
                Sample(text, "flux_queue_jobs_leased", null, shared.Leased);
                Family(text, "flux_queue_workers", "gauge", "Workers holding a live lease.");
                Sample(text, "flux_queue_workers", null, shared.Workers);
                Family(text, "flux_queue_oldest_lease_seconds", "gauge", "Age of the oldest live lease, in seconds (0 when none).");
                Sample(text, "flux_queue_oldest_lease_seconds", null, shared.OldestLease?.TotalSeconds ?? 0);
            }

            if (heldJobs is not null)
            {
                Family(text, "flux_worker_jobs_held", "gauge", "Jobs this worker holds now.");
                Sample(text, "flux_worker_jobs_held", null, heldJobs());
            }

            Family(text, "flux_queue_length", "gauge", "Predictions waiting for the pipeline.");
            Sample(text, "flux_queue_length", null, queueLength());
            Family(text, "flux_generation_active", "gauge", "Predictions the pipeline is running (0 or 1).");
            Sample(text, "flux_generation_active", null, running());
            Family(text, "flux_predictions_created_total", "counter", "Predictions accepted, by API (prediction: Replicate's, openai: OpenAI's).");
            foreach ((string api, long value) in created.OrderBy(c => c.Key, StringComparer.Ordinal))
            {
                Sample(text, "flux_predictions_created_total", ("api", api), value);
            }

            Family(text, "flux_predictions_completed_total", "counter", "Predictions finished, by final status.");
            foreach ((string status, long value) in completed.OrderBy(c => c.Key, StringComparer.Ordinal))
            {
                Sample(text, "flux_predictions_completed_total", ("status", status), value);
            }

            Family(text, "flux_predictions_rejected_total", "counter", "Predictions refused because the queue was full.");
            Sample(text, "flux_predictions_rejected_total", null, Interlocked.Read(ref rejectedTotal));
            Family(text, "flux_images_generated_total", "counter", "Images generated.");
            Sample(text, "flux_images_generated_total", null, Interlocked.Read(ref imagesTotal));
            if (deliveries is not null)
            {
                Family(text, "flux_webhook_outbox_pending", "gauge", "Webhook deliveries in the outbox still to be made (all nodes').");
                Sample(text, "flux_webhook_outbox_pending", null, deliveries.Pending);
                Family(text, "flux_webhook_outbox_failed", "gauge", "Webhook deliveries in the outbox that failed for good (all nodes').");
                Sample(text, "flux_webhook_outbox_failed", null, deliveries.Failed);
            }

            Family(text, "flux_webhook_attempts_total", "counter", "Webhook delivery attempts this node made, by outcome (failed: the last attempt, given up).");
            foreach ((string outcome, long value) in webhookOutcomes.OrderBy(c => c.Key, StringComparer.Ordinal))
            {
                Sample(text, "flux_webhook_attempts_total", ("outcome", outcome), value);
            }

            Family(text, "flux_step_duration_seconds", "histogram", "Wall time of one denoising step, in seconds.");
            steps.Write(text, "flux_step_duration_seconds");
            Family(text, "flux_generation_duration_seconds", "histogram", "Wall time of one generation (prepare to encode), in seconds.");
            generations.Write(text, "flux_generation_duration_seconds");
        }

        return text.ToString();
    }

    private static void Family(StringBuilder text, string name, string type, string help) =>
        text.Append("# HELP ").Append(name).Append(' ').Append(help.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal)).Append('\n')
            .Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');

    internal static void Sample(StringBuilder text, string name, (string Name, string Value)? label, double value)
    {
        text.Append(name);
        if (label is { } l)
        {
            string escaped = l.Value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
            text.Append('{').Append(l.Name).Append("=\"").Append(escaped).Append("\"}");
        }

        text.Append(' ').Append(Number(value)).Append('\n');
    }

    internal static string Number(double value) =>
        double.IsPositiveInfinity(value) ? "+Inf" : double.IsNegativeInfinity(value) ? "-Inf" : value.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>A Prometheus histogram: counts per upper bound (cumulative when written), their sum and count. Not thread-safe: the caller locks.</summary>
    private sealed class PrometheusHistogram(double[] bounds)
    {
        private readonly long[] counts = new long[bounds.Length];
        private double sum;
        private long count;

        public void Observe(double value)
        {
            int bucket = Array.FindIndex(bounds, b => value <= b);
            if (bucket >= 0)
            {
                counts[bucket]++;
            }

            sum += value;
            count++;
        }

        public void Write(StringBuilder text, string name)
        {
            long cumulative = 0;
            for (int k = 0; k < bounds.Length; k++)
            {
                cumulative += counts[k];
                Sample(text, name + "_bucket", ("le", Number(bounds[k])), cumulative);
            }

            Sample(text, name + "_bucket", ("le", "+Inf"), count);
            Sample(text, name + "_sum", null, sum);
            Sample(text, name + "_count", null, count);
        }
    }
}
