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
    private readonly Counter<long> created;
    private readonly Counter<long> completed;
    private readonly Counter<long> rejected;
    private readonly Histogram<double> stepDuration;
    private readonly Histogram<double> generationDuration;
    private readonly object gate = new();
    private readonly Dictionary<string, long> totals = new(StringComparer.Ordinal);
    private double stepSeconds;
    private long stepCount;
    private Func<int> queueLength = () => 0;
    private Func<int> running = () => 0;

    internal ServerMetrics(IMeterFactory factory)
    {
        Meter = factory.Create(new MeterOptions(MeterName));
        images = Meter.CreateCounter<long>("flux.images.generated", "{image}", "Images generated.");
        created = Meter.CreateCounter<long>("flux.predictions.created", "{prediction}", "Predictions accepted, by API.");
        completed = Meter.CreateCounter<long>("flux.predictions.completed", "{prediction}", "Predictions finished, by final status.");
        rejected = Meter.CreateCounter<long>("flux.predictions.rejected", "{prediction}", "Predictions refused because the queue was full.");
        stepDuration = Meter.CreateHistogram<double>("flux.step.duration", "s", "Wall time of one denoising step.");
        generationDuration = Meter.CreateHistogram<double>("flux.generation.duration", "s", "Wall time of one generation (prepare to encode).");
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

    internal void Created(string api)
    {
        created.Add(1, new KeyValuePair<string, object?>("api", api));
        Add($"flux_predictions_created_total{{api=\"{api}\"}}", 1);
    }

    internal void Completed(string status)
    {
        completed.Add(1, new KeyValuePair<string, object?>("status", status));
        Add($"flux_predictions_completed_total{{status=\"{status}\"}}", 1);
    }

    internal void Rejected()
    {
        rejected.Add(1);
        Add("flux_predictions_rejected_total", 1);
    }

    internal void ImagesGenerated(int count)
    {
        images.Add(count);
        Add("flux_images_generated_total", count);
    }

    internal void Step(double seconds)
    {
        stepDuration.Record(seconds);
        lock (gate)
        {
            stepSeconds += seconds;
            stepCount++;
        }
    }

    internal void Generation(double seconds) => generationDuration.Record(seconds);

    /// <summary>The counters in the Prometheus text format.</summary>
    internal string Prometheus()
    {
        var text = new StringBuilder();
        lock (gate)
        {
            text.Append("# TYPE flux_queue_length gauge\n").Append(CultureInfo.InvariantCulture, $"flux_queue_length {queueLength()}\n");
            text.Append("# TYPE flux_generation_active gauge\n").Append(CultureInfo.InvariantCulture, $"flux_generation_active {running()}\n");
            text.Append("# TYPE flux_step_duration_seconds summary\n")
                .Append(CultureInfo.InvariantCulture, $"flux_step_duration_seconds_sum {stepSeconds}\n")
                .Append(CultureInfo.InvariantCulture, $"flux_step_duration_seconds_count {stepCount}\n");
            text.Append("# TYPE flux_images_generated_total counter\n");
            if (!totals.ContainsKey("flux_images_generated_total"))
            {
                text.Append("flux_images_generated_total 0\n");
            }

            foreach ((string name, long value) in totals.OrderBy(t => t.Key, StringComparer.Ordinal))
            {
                text.Append(CultureInfo.InvariantCulture, $"{name} {value}\n");
            }
        }

        return text.ToString();
    }

    private void Add(string series, long value)
    {
        lock (gate)
        {
            totals[series] = totals.GetValueOrDefault(series) + value;
        }
    }
}
