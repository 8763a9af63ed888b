using System.Globalization;
using System.Text.Json.Nodes;
using FluxNative.Testing;

namespace FluxNative.Cli.Tests;

/// <summary><c>flux bench</c>: what it measures and reports, the synthetic published-shape weights, <c>--compare</c>, and its option errors.</summary>
public sealed class BenchTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Fact]
    public void Demo_bench_reports_every_stage_of_every_timed_run()
    {
        string json = temp.File("bench.json"), markdown = temp.File("bench.md");
        CliResult result = CliRunner.Run("bench", "--demo", "--width", "128", "--height", "96", "--steps", "3", "--batch", "2",
            "--runs", "2", "--warmup", "1", "--format", "webp", "--speed-mode", "fastest", "--progress", "lines", "--json", json, "--markdown", markdown);

        Assert.True(result.ExitCode == 0, result.Error);
        // The report is the result (standard output, and the markdown file); progress is on standard error, labelled by run.
        Assert.StartsWith("# flux bench: 128x96, 3 steps, batch 2, cpu", result.Output);
        Assert.Equal(result.Output, File.ReadAllText(markdown));
        Assert.Contains("warm-up 1/1 denoising  3/3", result.Error);
        Assert.Contains("run 2/2 denoising  3/3", result.Error);
        Assert.DoesNotContain("run 3/2", result.Error);

        JsonObject report = JsonNode.Parse(File.ReadAllText(json))!.AsObject();
        Assert.Equal("fluxnative-bench/1", (string?)report["format"]);
        JsonObject settings = report["settings"]!.AsObject();
        Assert.Equal(("demo", 128, 96, 3, 2, "webp", 2, 1), ((string?)settings["source"], (int)settings["width"]!, (int)settings["height"]!,
            (int)settings["steps"]!, (int)settings["batch"]!, (string?)settings["image_format"], (int)settings["runs"]!, (int)settings["warmup"]!));
        Assert.False(string.IsNullOrEmpty((string?)report["machine"]!["cpu"]));
        Assert.Equal("fastest", (string?)settings["speed_mode"]);
        Assert.Contains("- speed mode: fastest; transformer blocks run", result.Output);
        Assert.True((double)report["load_s"]! > 0);

        JsonArray runs = report["runs_ms"]!.AsArray();
        Assert.Equal(2, runs.Count);
        foreach (JsonNode? run in runs)
        {
            double[] steps = [.. run!["steps"]!.AsArray().Select(s => (double)s!)];
            Assert.Equal(3, steps.Length);
            Assert.All(steps, s => Assert.True(s > 0 && double.IsFinite(s)));
            // The steps are the denoising stage, cut where each step's end was reported.
            Assert.Equal((double)run["denoise"]!, steps.Sum(), 0.5);
            Assert.Equal(2, (int)run["peak_batch_images"]!);
            double share = (double)run["blocks_computed_share"]!;
            Assert.True(share > 0 && share <= 1, $"blocks share {share}");
            double parts = (double)run["prepare"]! + (double)run["denoise"]! + (double)run["decode"]! + (double)run["image_encode"]!;
            Assert.Equal((double)run["total"]!, parts, 0.5);
            Assert.True((double)run["tokenize"]! > 0 && (double)run["tokenize"]! <= (double)run["text_encode"]!, "each run tokenizes and encodes its prompt (no cache)");
        }

        // The rates follow from the medians.
        JsonObject stages = report["stages_ms"]!.AsObject();
        Assert.Equal(3 / ((double)stages["denoise"]!["median"]! / 1000), (double)report["steps_per_s"]!, 0.01);
        Assert.Equal(2 / ((double)stages["total"]!["median"]! / 1000), (double)report["images_per_s"]!, 0.001);
        Assert.True((long)report["memory"]!["peak_host_bytes"]! >= (long)report["memory"]!["host_bytes_after_load"]!);
        foreach (string stage in new[] { "tokenize", "text_encode", "prepare", "step", "denoise", "decode", "image_encode", "total" })
        {
            JsonNode s = stages[stage]!;
            Assert.True((double)s["min"]! <= (double)s["median"]! && (double)s["median"]! <= (double)s["max"]!, stage);
        }
    }

    [Fact]
    public void Synthetic_weights_have_the_published_shapes_and_are_written_once()
    {
        string cache = temp.File("synthetic-cache"), json = temp.File("synthetic.json");
        string[] args = ["bench", "--synthetic", "schnell", "--depth", "1", "--depth-single", "1", "--encoder-layers", "1", "--cache-dir", cache,
            "--width", "64", "--height", "64", "--steps", "1", "--runs", "1", "--warmup", "0", "--max-length", "16", "--progress", "none", "--json", json];
        CliResult result = CliRunner.Run(args);

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("written  ", result.Error);
        JsonObject settings = JsonNode.Parse(File.ReadAllText(json))!["settings"]!.AsObject();
        Assert.Equal("synthetic", (string?)settings["source"]);
        // The transformer as loaded: the published widths, the depth asked for.
        Assert.Equal("schnell: hidden 3072, 24 heads x 128, mlp 12288, 1 double + 1 single blocks, in 64, out 64, context 4096, vec 768, axes [16, 56, 56], theta 10000",
            (string?)settings["transformer"]);

        // The second time the cached weights are used as they are.
        var options = new SyntheticModelOptions { Variant = FluxVariant.Schnell, Depth = 1, DepthSingle = 1, EncoderLayers = 1 };
        FluxPipelineSources sources = SyntheticModels.Write(options, cache, out bool written);
        Assert.False(written);
        using (Checkpoint t5 = Checkpoint.Open(sources.T5!))
        {
            CheckpointDescription d = t5.Describe();
            Assert.Equal((4096L, 10240L, 64L, 1L), (d.ConfigInt64("d_model"), d.ConfigInt64("d_ff"), d.ConfigInt64("num_heads"), d.ConfigInt64("num_layers")));
        }

        Assert.Single(Directory.GetDirectories(cache));   // no partial folder left behind
    }

    [Fact]
    public void Compare_prints_the_differences_and_the_ratios_of_two_reports()
    {
        string a = temp.File("a.json"), b = temp.File("b.json");
        File.WriteAllText(a, Report(device: "cpu", load: 2, step: 400, stepsPerSecond: 2.5));
        File.WriteAllText(b, Report(device: "cuda:0", load: 1, step: 100, stepsPerSecond: 10));

        CliResult result = CliRunner.Run("bench", "--compare", a, b);

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("settings.device: \"cpu\" -> \"cuda:0\"", result.Output);
        Assert.Contains("| load s | 2 | 1 | 0.500 |", result.Output);
        Assert.Contains("| one denoising step ms | 400 | 100 | 0.250 |", result.Output);
        Assert.Contains("| steps/s | 2.5 | 10 | 4.000 |", result.Output);
        // A figure one report lacks has no ratio.
        Assert.Contains("| peak host bytes | - | - | - |", result.Output);
    }

    [Fact]
    public void Compare_refuses_a_file_that_is_not_a_bench_report()
    {
        string a = temp.File("a.json"), notReport = temp.File("other.json");
        File.WriteAllText(a, Report("cpu", 1, 1, 1));
        File.WriteAllText(notReport, "{\"format\": \"something-else\"}");

        CliResult result = CliRunner.Run("bench", "--compare", a, notReport);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains($"--compare {notReport}: not a flux bench report", result.Error);
    }

    [Theory]
    [InlineData("Nothing to measure", "bench")]
    [InlineData("Give one model", "bench", "--demo", "--synthetic", "dev")]
    [InlineData("--depth shapes the --synthetic weights", "bench", "--demo", "--depth", "2")]
    [InlineData("--compare reads two reports; it runs nothing, so --runs does not apply", "bench", "--compare", "a.json", "b.json", "--runs", "2")]
    [InlineData("Give both --width and --height", "bench", "--demo", "--width", "128")]
    [InlineData("--synthetic", "bench", "--synthetic", "pro")]
    [InlineData("--speed-mode", "bench", "--demo", "--speed-mode", "ludicrous")]
    [InlineData("--batch must be between 1 and 10", "bench", "--demo", "--batch", "11")]
    public void Bad_options_are_one_line_before_anything_loads(string expected, params string[] args)
    {
        CliResult result = CliRunner.Run(args);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains(expected, result.Error);
        Assert.Empty(result.Output);
    }

    [Fact]
    public void Step_times_start_when_the_request_was_admitted()
    {
        var timings = new GenerationTimings(TimeSpan.FromMilliseconds(50), TimeSpan.FromMilliseconds(90), TimeSpan.Zero, TimeSpan.Zero, TimeSpan.FromMilliseconds(140), 3);
        double[] steps = Benchmark.StepTimes(timings, [TimeSpan.FromMilliseconds(70), TimeSpan.FromMilliseconds(100), TimeSpan.FromMilliseconds(140)]);
        Assert.Equal([20, 30, 40], steps.Select(s => Math.Round(s, 6)));
    }

    private static string Report(string device, double load, double step, double stepsPerSecond) => string.Create(CultureInfo.InvariantCulture, $$"""
        {
          "format": "fluxnative-bench/1",
          "machine": { "cpu": "test cpu" },
          "software": { "commit": "abc" },
          "settings": { "device": "{{device}}", "width": 1024 },
          "load_s": {{load}},
          "stages_ms": { "step": { "median": {{step}} } },
          "steps_per_s": {{stepsPerSecond}},
          "memory": { "peak_host_bytes": null }
        }
        """);
}
