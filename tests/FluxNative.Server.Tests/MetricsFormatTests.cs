using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;

namespace FluxNative.Server.Tests;

/// <summary><c>GET /metrics</c> in Prometheus' text exposition format, read back as a scraper would.</summary>
public sealed partial class MetricsFormatTests
{
    [Fact]
    public async Task Every_family_has_help_and_type_and_the_durations_are_histograms()
    {
        await using ServerHost server = await ServerHost.StartAsync();
        Reply generated = await server.PostAsync("/v1/images/generations", """{"prompt":"count me","size":"64x64","num_inference_steps":3,"response_format":"b64_json"}""");
        Assert.Equal(HttpStatusCode.OK, generated.Status);

        Reply reply = await server.GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.OK, reply.Status);
        Assert.Equal("text/plain", reply.ContentType);
        var help = new Dictionary<string, string>();
        var types = new Dictionary<string, string>();
        var samples = new List<(string Name, string Labels, double Value)>();
        foreach (string line in reply.Text.Split('\n'))
        {
            if (line.Length == 0)
            {
                continue;
            }

            if (HelpOrType().Match(line) is { Success: true } meta)
            {
                string family = meta.Groups["family"].Value;
                Dictionary<string, string> target = meta.Groups["kind"].Value == "HELP" ? help : types;
                Assert.False(target.ContainsKey(family), $"a second {meta.Groups["kind"].Value} for {family}");
                Assert.False(samples.Any(s => FamilyOf(s.Name, types) == family), $"{family}'s {meta.Groups["kind"].Value} comes after its samples");
                target[family] = meta.Groups["rest"].Value;
                continue;
            }

            Match sample = SampleLine().Match(line);
            Assert.True(sample.Success, $"not a sample line: '{line}'");
            double value = sample.Groups["value"].Value == "+Inf" ? double.PositiveInfinity : double.Parse(sample.Groups["value"].Value, CultureInfo.InvariantCulture);
            samples.Add((sample.Groups["name"].Value, sample.Groups["labels"].Value, value));
        }

        foreach ((string name, _, _) in samples)
        {
            string family = FamilyOf(name, types);
            Assert.True(types.ContainsKey(family), $"{name} has no # TYPE");
            Assert.True(help.TryGetValue(family, out string? text) && text.Length > 0, $"{name} has no # HELP");
        }

        Assert.Equal(help.Keys.Order(), types.Keys.Order());
        Assert.Equal("histogram", types["flux_generation_duration_seconds"]);
        Assert.Equal("histogram", types["flux_step_duration_seconds"]);
        Assert.Equal("counter", types["flux_images_generated_total"]);
        Assert.Equal("gauge", types["flux_queue_length"]);

        foreach (string histogram in new[] { "flux_generation_duration_seconds", "flux_step_duration_seconds" })
        {
            // Cumulative buckets by increasing le, ending in +Inf, which equals _count.
            var buckets = samples.Where(s => s.Name == histogram + "_bucket").ToList();
            Assert.True(buckets.Count >= 5, $"{histogram} has {buckets.Count} buckets");
            double[] bounds = [.. buckets.Select(b => LeOf(b.Labels))];
            Assert.Equal(bounds.Order(), bounds);
            Assert.Equal(double.PositiveInfinity, bounds[^1]);
            Assert.Equal(buckets.Select(b => b.Value).Order(), buckets.Select(b => b.Value));
            double count = samples.Single(s => s.Name == histogram + "_count").Value;
            Assert.Equal(count, buckets[^1].Value);
            Assert.True(samples.Single(s => s.Name == histogram + "_sum").Value > 0);
        }

        Assert.Equal(1, samples.Single(s => s.Name == "flux_generation_duration_seconds_count").Value);
        Assert.Equal(3, samples.Single(s => s.Name == "flux_step_duration_seconds_count").Value);
        Assert.Equal(1, samples.Single(s => s.Name == "flux_predictions_completed_total" && s.Labels == "status=\"succeeded\"").Value);
        Assert.Equal(0, samples.Single(s => s.Name == "flux_predictions_completed_total" && s.Labels == "status=\"failed\"").Value);
        Assert.Equal(1, samples.Single(s => s.Name == "flux_predictions_created_total" && s.Labels == "api=\"openai\"").Value);
    }

    /// <summary>A sample's family: its name, or for a histogram's series the name without _bucket, _sum or _count.</summary>
    private static string FamilyOf(string name, Dictionary<string, string> types)
    {
        foreach (string suffix in new[] { "_bucket", "_sum", "_count" })
        {
            if (name.EndsWith(suffix, StringComparison.Ordinal) && types.GetValueOrDefault(name[..^suffix.Length]) == "histogram")
            {
                return name[..^suffix.Length];
            }
        }

        return name;
    }

    private static double LeOf(string labels)
    {
        string le = Regex.Match(labels, "le=\"([^\"]*)\"").Groups[1].Value;
        return le == "+Inf" ? double.PositiveInfinity : double.Parse(le, CultureInfo.InvariantCulture);
    }

    [GeneratedRegex("^# (?<kind>HELP|TYPE) (?<family>[a-zA-Z_:][a-zA-Z0-9_:]*) (?<rest>.*)$")]
    private static partial Regex HelpOrType();

    [GeneratedRegex("^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\\{(?<labels>[^}]*)\\})? (?<value>[-+0-9.eE]+|\\+Inf|NaN)$")]
    private static partial Regex SampleLine();
}
