using System.CommandLine;
using System.Diagnostics;

namespace FluxNative.Cli;

/// <summary>
/// <c>flux bench (--model DIR | --transformer PATH --ae PATH | --synthetic dev|schnell | --demo) [settings] [--json FILE]
/// [--markdown FILE]</c>, and <c>flux bench --compare A.json B.json</c>. Declares and checks the options;
/// <see cref="Benchmark"/> measures and <see cref="BenchReport"/> writes.
/// </summary>
internal static class BenchCommand
{
    public static Command Create(CliConsole console)
    {
        var model = CliOptions.ExistingPath("--model", "A diffusers-layout model folder or an engine file (flux build), as flux generate takes it.");
        var transformer = CliOptions.ExistingPath("--transformer", "The transformer (a BFL file or a diffusers transformer/ folder); overrides --model's.");
        var ae = CliOptions.ExistingPath("--ae", "The autoencoder (BFL ae.safetensors or a diffusers vae/ folder); overrides --model's.");
        var clip = CliOptions.ExistingPath("--clip", "The CLIP text encoder folder; overrides --model's.");
        var t5 = CliOptions.ExistingPath("--t5", "The T5 encoder folder; overrides --model's.");
        var synthetic = new Option<string?>("--synthetic")
        {
            Description = "Random weights of the published FLUX.1 shapes, nothing downloaded: dev or schnell (written once into --cache-dir, then reused).",
        };
        synthetic.AcceptOnlyFromAmong("dev", "schnell");
        var demo = new Option<bool>("--demo") { Description = "The tiny demo models (flux generate --demo's): measures the pipeline's overhead, not a model." };
        var depth = CliOptions.Number("--depth", "--synthetic: transformer double blocks, 1-19 (default the published 19).", 0, SyntheticModelOptions.PublishedDepth, 0);
        var depthSingle = CliOptions.Number("--depth-single", "--synthetic: transformer single blocks, 1-38 (default the published 38).", 0, SyntheticModelOptions.PublishedDepthSingle, 0);
        var encoderLayers = CliOptions.Number("--encoder-layers", "--synthetic: layers of each text encoder, 1-24 (default the published: T5 24, CLIP 12; CLIP takes at most 12).", 0, SyntheticModelOptions.PublishedT5Layers, 0);
        var cacheDir = new Option<string?>("--cache-dir") { Description = $"--synthetic: where the weights are written and reused (default {SyntheticModels.DefaultCacheDirectory})." };
        var width = CliOptions.Number("--width", "Width in pixels, a multiple of 16 (default 1024; 256 with --demo).", 64, 2048, 0);
        var height = CliOptions.Number("--height", "Height in pixels, a multiple of 16 (default 1024; 256 with --demo).", 64, 2048, 0);
        var steps = CliOptions.Number<int>("--steps", "Denoising steps, 1-50 (default 28 for dev, 4 for schnell).", 1, 50);
        var guidance = CliOptions.Number<double>("--guidance", "Distilled guidance, 0-10 (default 3.5).", 0, 10);
        var batch = CliOptions.Number("--batch", $"Images per request, 1-{FluxPipeline.MaxImages}: they share every transformer forward.", 1, FluxPipeline.MaxImages, 1);
        var runs = CliOptions.Number("--runs", "Timed runs, 1-1000.", 1, 1000, 3);
        var warmup = CliOptions.Number("--warmup", "Untimed runs first, 0-100.", 0, 100, 1);
        var maxLength = CliOptions.T5MaxLength($"T5 tokens per prompt, 1-{CliOptions.MaxT5Length} (default 512 for dev, 256 for schnell; 64 with --demo).");
        var prompt = new Option<string>("--prompt") { Description = "The prompt each run encodes.", DefaultValueFactory = _ => BenchRequest.DefaultPrompt };
        var format = new Option<string>("--format") { Description = "The image file each run writes in memory: png, jpg or webp.", DefaultValueFactory = _ => "png" };
        format.AcceptOnlyFromAmong("png", "jpg", "jpeg", "webp");
        var weights = new Option<string>("--weights-dtype") { Description = "How the transformer holds its weights: stored, f32, bf16 or fp8.", DefaultValueFactory = _ => "stored" };
        weights.AcceptOnlyFromAmong(TransformerForward.WeightFormatNames);
        var activations = new Option<string>("--activations") { Description = "Transformer activation precision: f32 (exact) or bf16.", DefaultValueFactory = _ => "f32" };
        activations.AcceptOnlyFromAmong(TransformerForward.ActivationPrecisionNames);
        var speedMode = new Option<string>("--speed-mode")
        {
            Description = "Step caching, as flux generate --speed-mode: lossless (none), juiced, extra_juiced or fastest.",
            DefaultValueFactory = _ => "lossless",
        };
        speedMode.AcceptOnlyFromAmong([.. SpeedModes.Names]);
        var threads = CliOptions.Threads();
        var device = CliOptions.Device();
        var progress = new Option<string>("--progress") { Description = "Progress on standard error: auto, bar, lines or none.", DefaultValueFactory = _ => "auto" };
        progress.AcceptOnlyFromAmong(ProgressDisplay.ModeNames);
        var json = new Option<string?>("--json") { Description = "Also write the report as JSON to this file (machine, commit, settings, every run's stage and step times)." };
        var markdown = new Option<string?>("--markdown") { Description = "Also write the report as markdown to this file." };
        var compare = new Option<string[]>("--compare")
        {
            Description = "Compare two JSON reports: --compare A.json B.json prints the settings that differ and every figure of both with the ratio B/A.",
            Arity = new ArgumentArity(2, 2),
            AllowMultipleArgumentsPerToken = true,
        };

        var command = new Command("bench", "Measure a setup: load time, then per-stage times (tokenize, text encoders, each step, decode, image encode), steps/s, images/s and peak memory over timed runs of whole requests. Standard output carries the report.")
        {
            model, transformer, ae, clip, t5, synthetic, demo, depth, depthSingle, encoderLayers, cacheDir, width, height, steps, guidance, batch, runs, warmup,
            maxLength, prompt, format, weights, activations, speedMode, threads, device, progress, json, markdown, compare,
        };
        command.Validators.Add(result =>
        {
            bool given(Option o) => result.Given(o);
            if (given(compare))
            {
                Option[] others = [model, transformer, ae, clip, t5, synthetic, demo, depth, depthSingle, encoderLayers, width, height, steps, batch, runs, warmup, json, markdown];
                if (others.FirstOrDefault(given) is { } other)
                {
                    result.AddError(other, $"--compare reads two reports; it runs nothing, so {other.Name} does not apply.");
                }

                return;
            }

            int sources = (given(model) || given(transformer) || given(ae) ? 1 : 0) + (given(synthetic) ? 1 : 0) + (result.GetValue(demo) ? 1 : 0);
            if (sources == 0)
            {
                result.AddError("Nothing to measure: pass --model DIR (or --transformer PATH and --ae PATH), --synthetic dev|schnell or --demo.");
            }
            else if (sources > 1)
            {
                result.AddError("Give one model: --model/--transformer/--ae, --synthetic or --demo.");
            }
            else if (!given(synthetic) && !result.GetValue(demo) && !given(model) && !(given(transformer) && given(ae)))
            {
                result.AddError(given(transformer) ? ae : transformer, "Without --model, give both --transformer and --ae.");
            }

            if (!given(synthetic) && (given(depth) || given(depthSingle) || given(encoderLayers) || given(cacheDir)))
            {
                Option stray = new Option[] { depth, depthSingle, encoderLayers, cacheDir }.First(given);
                result.AddError(stray, $"{stray.Name} shapes the --synthetic weights; it does not apply to other models.");
            }

            if (given(width) != given(height))
            {
                result.AddError(given(width) ? width : height, "Give both --width and --height, or neither.");
            }
        });
        command.SetAction(async (parsed, cancellationToken) =>
        {
            if (parsed.GetValue(compare) is [var a, var b])
            {
                console.Out.Write(BenchReport.Compare(a, b));
                return ExitCodes.Success;
            }

            string? jsonPath = parsed.GetValue(json), markdownPath = parsed.GetValue(markdown);
            foreach (var (path, optionName) in new[] { (jsonPath, "--json"), (markdownPath, "--markdown") })
            {
                if (path is not null)
                {
                    OutputTarget.CheckWritable(path, optionName);
                }
            }

            bool isDemo = parsed.GetValue(demo);
            string? variant = parsed.GetValue(synthetic);
            TimeSpan? written = null;
            FluxPipelineSources sources;
            FluxPipelineOptions options = isDemo ? DemoModels.Options : new FluxPipelineOptions();
            string source, name;
            if (isDemo)
            {
                sources = DemoModels.Write(Path.Combine(Path.GetTempPath(), "fluxnative-demo-2"));
                source = "demo";
                name = "tiny demo models";
            }
            else if (variant is not null)
            {
                var synth = new SyntheticModelOptions
                {
                    Variant = variant == "dev" ? FluxVariant.Dev : FluxVariant.Schnell,
                    Depth = parsed.GetValue(depth),
                    DepthSingle = parsed.GetValue(depthSingle),
                    EncoderLayers = parsed.GetValue(encoderLayers),
                };
                console.Note($"weights  {synth.Summary}");
                long started = Stopwatch.GetTimestamp();
                sources = SyntheticModels.Write(synth, parsed.GetValue(cacheDir), out bool fresh);
                if (fresh)
                {
                    written = Stopwatch.GetElapsedTime(started);
                    console.Note(FormattableString.Invariant($"written  {Path.GetDirectoryName(sources.Transformer)} in {written.Value.TotalSeconds:F1} s (reused by later runs)"));
                }

                source = "synthetic";
                name = synth.Summary;
            }
            else
            {
                sources = new FluxPipelineSources
                {
                    ModelDirectory = parsed.GetValue(model),
                    Transformer = parsed.GetValue(transformer),
                    Autoencoder = parsed.GetValue(ae),
                    Clip = parsed.GetValue(clip),
                    T5 = parsed.GetValue(t5),
                };
                source = "model";
                name = parsed.GetValue(model) ?? parsed.GetValue(transformer)!;
            }

            options = options with
            {
                TransformerWeights = TransformerForward.ParseWeightFormat(parsed.GetValue(weights)!),
                Activations = TransformerForward.ParseActivationPrecision(parsed.GetValue(activations)!),
                Threads = parsed.GetValue(threads),
                Device = parsed.GetValue(device),
            };
            if (parsed.GetValue(maxLength) is int length)
            {
                options = options with { T5MaxLength = length };
            }

            int side = isDemo ? DemoModels.DefaultImageSize : 1024;
            var request = new BenchRequest
            {
                Source = source,
                ModelName = name,
                Sources = sources,
                Options = options,
                Width = parsed.GetValue(width) is > 0 and var w ? w : side,
                Height = parsed.GetValue(height) is > 0 and var h ? h : side,
                Steps = parsed.GetValue(steps),
                Guidance = parsed.GetValue(guidance),
                Batch = parsed.GetValue(batch),
                Runs = parsed.GetValue(runs),
                Warmup = parsed.GetValue(warmup),
                Prompt = parsed.GetValue(prompt)!,
                Format = Images.TryParseFormat(parsed.GetValue(format), out ImageFormat chosen) ? chosen : ImageFormat.Png,   // AcceptOnlyFromAmong has checked it
                Progress = ProgressDisplay.ParseMode(parsed.GetValue(progress)!),
                SpeedMode = SpeedModes.TryParse(parsed.GetValue(speedMode), out SpeedMode mode) ? mode : SpeedMode.Lossless,   // checked by AcceptOnlyFromAmong
            };
            BenchResult result = await Benchmark.RunAsync(request, console, cancellationToken, written).ConfigureAwait(false);
            string report = BenchReport.Markdown(result);
            console.Out.Write(report);
            if (jsonPath is not null)
            {
                File.WriteAllText(jsonPath, BenchReport.JsonText(result));
                console.Note($"json     {jsonPath}");
            }

            if (markdownPath is not null)
            {
                File.WriteAllText(markdownPath, report);
                console.Note($"markdown {markdownPath}");
            }

            return ExitCodes.Success;
        });
        return command;
    }
}
