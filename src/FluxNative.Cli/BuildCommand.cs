using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace FluxNative.Cli;

/// <summary>
/// <c>flux build (--model DIR | --transformer PATH [--ae PATH] [--clip DIR --t5 DIR]) --precision bf16|fp8 -o FILE</c>:
/// an engine file (docs/engines.md) from published weights, then its quality gate (<see cref="EngineQualityCheck"/>)
/// against the same weights in bf16; an engine over the bounds is not written unless <c>--force</c>.
/// </summary>
internal static class BuildCommand
{
    public static Command Create(CliConsole console)
    {
        var model = CliOptions.ExistingPath("--model", "A diffusers-layout model folder (transformer/, vae/, text_encoder/, text_encoder_2/, tokenizers).");
        var transformer = CliOptions.ExistingPath("--transformer", "The transformer: a BFL single file or a diffusers transformer/ folder; overrides --model's.");
        var ae = CliOptions.ExistingPath("--ae", "The autoencoder: BFL ae.safetensors or a diffusers vae/ folder; overrides --model's.");
        var clip = CliOptions.ExistingPath("--clip", "The CLIP text encoder folder (its tokenizer inside it or in tokenizer/ beside it); overrides --model's.");
        var t5 = CliOptions.ExistingPath("--t5", "The T5 encoder folder (its tokenizer inside it or in tokenizer_2/ beside it); overrides --model's.");
        var precision = new Option<string>("--precision")
        {
            Description = "The transformer's linear weights: bf16, or fp8 (e4m3 with a scale per output channel; the input embedders, modulations and final layer stay bf16).",
            DefaultValueFactory = _ => "bf16",
        };
        precision.AcceptOnlyFromAmong("bf16", "fp8");
        var t5Precision = new Option<string>("--t5-precision") { Description = "T5's linear weights: stored (as the source has them), bf16 or fp8.", DefaultValueFactory = _ => "stored" };
        t5Precision.AcceptOnlyFromAmong("stored", "bf16", "fp8");
        var device = CliOptions.Device();
        var output = new Option<string>("--output", "-o") { Description = $"The engine file to write (e.g. dev-fp8{FluxEngine.Extension}).", Required = true };
        var calibration = CliOptions.ExistingPath("--calibration", "A text file of calibration prompts, one per line (empty lines and lines starting with # skipped); default: four built-in prompts.");
        var checkSize = CliOptions.Number("--check-size", "Quality check: image side in pixels, 64-1024.", 64, 1024, 256);
        var checkSteps = CliOptions.Number("--check-steps", "Quality check: denoising steps of the images compared, 1-50.", 1, 50, 4);
        var maxL2 = CliOptions.Number("--max-rel-l2", "Quality check: the largest relative L2 of the transformer's output from the bf16 model's that is accepted.", 0.0, 10.0, 6e-2);
        var minPsnr = CliOptions.Number("--min-psnr", "Quality check: the smallest PSNR (dB) of any decoded image against the bf16 model's that is accepted.", 0.0, 200.0, 25.0);
        var noCheck = new Option<bool>("--no-check") { Description = "Skip the quality check (the engine records that it was not checked)." };
        var force = new Option<bool>("--force") { Description = "Write the engine even when the quality check is over its bounds." };
        var noHash = new Option<bool>("--no-hash") { Description = "Do not record the sources' SHA-256 (saves reading every source byte once more)." };
        var threads = CliOptions.Threads();
        var json = new Option<bool>("--json") { Description = "Print the result as one JSON object on standard output." };

        var command = new Command("build", "Build an engine file: every component's weights packed as the backend runs them (bf16 or FP8), the tokenizers, and a quality check against the bf16 model. Standard output names the file.")
        {
            model, transformer, ae, clip, t5, precision, t5Precision, device, output, calibration, checkSize, checkSteps, maxL2, minPsnr, noCheck, force, noHash, threads, json,
        };
        command.Validators.Add(result =>
        {
            if (!result.Given(model) && !result.Given(transformer))
            {
                result.AddError("Nothing to build: pass --model DIR or --transformer PATH (with --ae, --clip and --t5 for a whole pipeline).");
            }

            if (result.Given(clip) != result.Given(t5) && !result.Given(model))
            {
                result.AddError(result.Given(clip) ? t5 : clip, "Give both text encoders (--clip and --t5), or neither.");
            }

            if (result.Given(noCheck) && new Option[] { calibration, checkSize, checkSteps, maxL2, minPsnr, force }.FirstOrDefault(result.Given) is { } stray)
            {
                result.AddError(stray, $"{stray.Name} sets the quality check, which --no-check skips.");
            }
        });
        command.SetAction((parsed, cancellationToken) => Task.FromResult(Run(parsed, cancellationToken)));
        return command;

        int Run(ParseResult parsed, CancellationToken cancellationToken)
        {
            string target = parsed.GetValue(output)!;
            OutputTarget.CheckWritable(target, "--output");
            var sources = new FluxPipelineSources
            {
                ModelDirectory = parsed.GetValue(model),
                Transformer = parsed.GetValue(transformer),
                Autoencoder = parsed.GetValue(ae),
                Clip = parsed.GetValue(clip),
                T5 = parsed.GetValue(t5),
            };
            var options = new FluxEngineBuildOptions
            {
                Precision = parsed.GetValue(precision) == "fp8" ? FluxEnginePrecision.Fp8 : FluxEnginePrecision.Bf16,
                T5Weights = TransformerForward.ParseWeightFormat(parsed.GetValue(t5Precision)!),
                Device = parsed.GetValue(device),
                Threads = parsed.GetValue(threads),
                HashSources = !parsed.GetValue(noHash),
            };

            // Built under a staging name: the file at --output is only ever a checked (or forced) engine.
            string staging = target + ".unchecked";
            long started = Stopwatch.GetTimestamp();
            console.Note($"building {target} ({parsed.GetValue(precision)}, for {options.Device})");
            FluxEngineInfo info;
            try
            {
                info = FluxEngine.Build(sources, staging, options);
                TimeSpan built = Stopwatch.GetElapsedTime(started);
                console.Note(FormattableString.Invariant($"built    {info.Components.Count} components in {built.TotalSeconds:F1} s"));

                JsonObject record = JsonNode.Parse(info.Build.GetRawText())!.AsObject();
                EngineQualityResult? quality = null;
                var check = new EngineQualityOptions
                {
                    Prompts = parsed.GetValue(calibration) is { } file ? ReadPrompts(file) : EngineQualityOptions.DefaultPrompts,
                    Size = parsed.GetValue(checkSize),
                    Steps = parsed.GetValue(checkSteps),
                    MaxRelativeL2 = parsed.GetValue(maxL2),
                    MinPsnrDb = parsed.GetValue(minPsnr),
                    Threads = options.Threads,
                };
                if (parsed.GetValue(noCheck))
                {
                    record["quality"] = "not checked (--no-check)";
                }
                else
                {
                    console.Note($"checking against the source in bf16 on {check.Prompts.Count} prompts at {check.Size}x{check.Size}, {check.Steps} steps");
                    quality = EngineQualityCheck.Run(sources, staging, check, cancellationToken);
                    record["quality"] = QualityRecord(quality, check, parsed.GetValue(calibration));
                    console.Note(FormattableString.Invariant(
                        $"quality  transformer output {quality.RelativeL2:0.###e0} relative L2 (worst prompt {quality.WorstRelativeL2:0.###e0}; bound {check.MaxRelativeL2:0.###e0}), images {Db(quality.PsnrDb)} PSNR (worst {Db(quality.WorstPsnrDb)}; bound {check.MinPsnrDb:F1} dB)"));
                }

                FluxEngine.SetBuildRecord(staging, record);
                if (quality is { Passed: false } && !parsed.GetValue(force))
                {
                    console.Error.WriteLine("flux: the engine is over the quality bounds and was not written (--force writes it anyway; --max-rel-l2 and --min-psnr set the bounds).");
                    return ExitCodes.Failure;
                }

                if (quality is { Passed: false })
                {
                    console.Warn("the engine is over the quality bounds; written because of --force.");
                }

                File.Move(staging, target, overwrite: true);
                info = FluxEngine.TryRead(target)!;
            }
            finally
            {
                File.Delete(staging);
            }

            if (parsed.GetValue(json))
            {
                console.Out.WriteLine(JsonSerializer.Serialize(new
                {
                    path = Path.GetFullPath(target),
                    bytes = new FileInfo(target).Length,
                    seconds = Stopwatch.GetElapsedTime(started).TotalSeconds,
                    format_version = info.FormatVersion,
                    target = info.TargetLayout,
                    precision = info.Precision.ToString().ToLowerInvariant(),
                    components = info.Components.Select(c => new { c.Name, c.ParameterCount, layers = c.LayerDTypes }),
                    build = info.Build,
                }));
            }
            else
            {
                console.Out.WriteLine(target);
            }

            return ExitCodes.Success;
        }
    }

    private static string Db(double value) => double.IsPositiveInfinity(value) ? "inf dB (identical)" : value.ToString("F1", CultureInfo.InvariantCulture) + " dB";

    private static JsonObject QualityRecord(EngineQualityResult q, EngineQualityOptions o, string? calibration) => new()
    {
        ["reference"] = "the sources with bf16 transformer weights",
        ["prompts"] = q.Prompts,
        ["calibration"] = calibration is null ? "built-in prompts" : Path.GetFullPath(calibration),
        ["size"] = o.Size,
        ["steps"] = o.Steps,
        // A transformer output that is not finite (NaN, infinity) has no distance: null, and said so.
        ["transformer_relative_l2"] = double.IsFinite(q.RelativeL2) ? q.RelativeL2 : null,
        ["transformer_worst_relative_l2"] = double.IsFinite(q.WorstRelativeL2) ? q.WorstRelativeL2 : null,
        ["transformer_output_finite"] = double.IsFinite(q.RelativeL2),
        // JSON has no infinity: identical images are recorded as null with "identical".
        ["image_psnr_db"] = double.IsFinite(q.PsnrDb) ? q.PsnrDb : null,
        ["image_worst_psnr_db"] = double.IsFinite(q.WorstPsnrDb) ? q.WorstPsnrDb : null,
        ["images_identical"] = double.IsPositiveInfinity(q.WorstPsnrDb),
        ["max_relative_l2"] = o.MaxRelativeL2,
        ["min_psnr_db"] = o.MinPsnrDb,
        ["passed"] = q.Passed,
    };

    private static IReadOnlyList<string> ReadPrompts(string file)
    {
        string[] prompts = File.ReadAllLines(file).Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')).ToArray();
        return prompts.Length > 0 ? prompts : throw new GenerationRequestException("calibration", $"{file} holds no prompts.");
    }
}
