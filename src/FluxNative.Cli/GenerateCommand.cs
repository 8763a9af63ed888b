using System.CommandLine;
using System.Globalization;
using System.CommandLine.Parsing;

namespace FluxNative.Cli;

/// <summary>
/// <c>flux generate [PROMPT] (--model DIR | --transformer PATH --ae PATH | --demo) [options]</c>.
/// Declares the options and checks every value and combination while parsing, so that a mistake is one line naming
/// the option before anything loads; <see cref="ImageGeneration"/> does the work.
/// </summary>
internal static class GenerateCommand
{
    /// <summary>The pipeline's request fields (<see cref="GenerationRequestException.Field"/>) as this command's options.</summary>
    private static readonly Dictionary<string, string> OptionOfField = new(StringComparer.Ordinal)
    {
        ["prompt_embeds"] = "--prompt-embeds",
        ["latents"] = "--latents",
        ["image"] = "--image",
        ["strength"] = "--strength",
        ["aspect_ratio"] = "--aspect-ratio",
        ["image_size"] = "--image-size",
        ["width"] = "--width",
        ["height"] = "--height",
        ["steps"] = "--steps",
        ["guidance"] = "--guidance",
        ["seed"] = "--seed",
        ["num_outputs"] = "--num-images",
        ["output_format"] = "--format",
        ["output_quality"] = "--quality",
        ["speed_mode"] = "--speed-mode",
        ["threshold"] = "--cache-threshold",
        ["model"] = "--model",
        ["clip"] = "--clip",
        ["t5"] = "--t5",
        ["clip_tokenizer"] = "--clip",
        ["t5_tokenizer"] = "--t5",
    };

    public static Command Create(CliConsole console)
    {
        var prompt = new Argument<string?>("prompt") { Description = "The prompt (or --prompt-embeds).", Arity = ArgumentArity.ZeroOrOne };
        var model = CliOptions.ExistingPath("--model", "A diffusers-layout model folder (model_index.json, transformer/, vae/, text_encoder/, text_encoder_2/, tokenizers), or an engine file (flux build).");
        var transformer = CliOptions.ExistingPath("--transformer", "The transformer: a BFL single file (flux1-dev.safetensors) or a diffusers transformer/ folder; overrides --model's.");
        var ae = CliOptions.ExistingPath("--ae", "The autoencoder: BFL ae.safetensors or a diffusers vae/ folder; overrides --model's.");
        var clip = CliOptions.ExistingPath("--clip", "The CLIP text encoder folder (diffusers text_encoder/); its tokenizer is found inside it or in the tokenizer/ beside it. Overrides --model's.");
        var t5 = CliOptions.ExistingPath("--t5", "The T5 encoder folder (diffusers text_encoder_2/); its tokenizer inside it or in tokenizer_2/ beside it. Overrides --model's.");
        var maxLength = CliOptions.T5MaxLength($"T5 tokens per prompt, 1-{CliOptions.MaxT5Length} (default 512 for dev, 256 for schnell; 64 with --demo).");
        var demo = new Option<bool>("--demo") { Description = "Run the whole pipeline on tiny random models this program writes itself, with the real tokenizers (random weights: the picture is noise, not the prompt)." };
        var aspect = new Option<string?>("--aspect-ratio") { Description = $"One of {string.Join(", ", FluxPipeline.AspectRatios.Keys)} (default 1:1)." };
        aspect.AcceptOnlyFromAmong([.. FluxPipeline.AspectRatios.Keys]);
        int minSide = FluxPipelineOptions.DefaultMinSide, maxSide = FluxPipelineOptions.DefaultMaxSide;
        string trained = $"FLUX was trained on {FluxPipeline.TrainedMinSide}-{FluxPipeline.TrainedMaxSide}; other sizes run with a warning";
        var imageSize = CliOptions.Number<int>("--image-size", $"Longest side in pixels, {minSide}-{maxSide} (default 1024; 256 with --demo); {trained}.", minSide, maxSide);
        var width = CliOptions.Number<int>("--width", $"Width in pixels, {minSide}-{maxSide} (with --height, instead of --aspect-ratio); rounded to a multiple of 16; {trained}.", minSide, maxSide);
        var height = CliOptions.Number<int>("--height", $"Height in pixels, {minSide}-{maxSide} (with --width).", minSide, maxSide);
        var steps = CliOptions.Number<int>("--steps", "Denoising steps, 1-50 (default 28 for dev, 4 for schnell).", 1, 50);
        var guidance = CliOptions.Number<double>("--guidance", "Distilled guidance, 0-10 (default 3.5; schnell ignores it).", 0, 10);
        var seed = CliOptions.Number<long>("--seed", "Seed; -1 or absent for a random one. Image k uses seed + k.", -1, long.MaxValue - FluxPipeline.MaxImages);
        var count = CliOptions.Number("--num-images", $"Images to generate, 1-{FluxPipeline.MaxImages}.", 1, FluxPipeline.MaxImages, 1, "-n");
        var format = new Option<string?>("--format") { Description = "png, jpg (jpeg) or webp (default: from --output's extension, else png)." };
        format.AcceptOnlyFromAmong("png", "jpg", "jpeg", "webp");
        var quality = CliOptions.Number("--quality", "JPEG/WebP quality, 1-100.", 1, 100, 80);
        var outPath = new Option<string?>("--output", "-o")
        {
            Description = "Output file (.png, .jpg, .jpeg or .webp; default flux-SEED.EXT), or a folder (existing, or ending in /) for numbered files flux-00001.EXT, ...; "
                + "with -n N, out.png becomes out-1.png ... out-N.png.",
        };
        var latents = CliOptions.ExistingPath("--latents", "A safetensors file with latents [N, 16, h, w] to use instead of seeded noise.");
        var promptEmbeds = CliOptions.ExistingPath("--prompt-embeds", "A safetensors file with txt [B, L, 4096] and y [B, 768] (B = 1 or N) to use instead of the prompt and the text encoders (flux encode writes one).");
        var image = CliOptions.ExistingPath("--image", "Image-to-image: start from this PNG, JPEG or WebP (the output takes its size unless --width/--height or --aspect-ratio/--image-size are given).");
        var strength = CliOptions.Number<double>("--strength", $"Image-to-image: how much of --image is replaced, over 0 up to 1 (default {FluxPipeline.DefaultStrength}); the steps start at step (1 - strength)*steps.", 0, 1);
        var saveLatents = new Option<string?>("--save-latents") { Description = "Write the final latents [N, 16, h, w] (before decoding) to this safetensors file." };
        var rounding = new Option<string>("--rounding") { Description = "8-bit conversion: round (as diffusers) or truncate (as BFL).", DefaultValueFactory = _ => "round" };
        rounding.AcceptOnlyFromAmong("round", "truncate");
        var weights = new Option<string>("--weights-dtype") { Description = "How the transformer holds its weights: stored, f32, bf16 or fp8.", DefaultValueFactory = _ => "stored" };
        weights.AcceptOnlyFromAmong(TransformerForward.WeightFormatNames);
        var activations = new Option<string>("--activations") { Description = "Transformer activation precision: f32 (exact) or bf16 (faster, ~1e-2).", DefaultValueFactory = _ => "f32" };
        activations.AcceptOnlyFromAmong(TransformerForward.ActivationPrecisionNames);
        var speedMode = new Option<string>("--speed-mode")
        {
            Description = "Step caching: lossless (none), juiced, extra_juiced or fastest (more reuse of transformer work between steps, at a measured "
                + "quality cost: benchmarks/results/speed-modes.md). Weight precision is --weights-dtype's, not the mode's.",
            DefaultValueFactory = _ => "lossless",
        };
        speedMode.AcceptOnlyFromAmong([.. SpeedModes.Names]);
        var cacheThreshold = CliOptions.Number<double>("--cache-threshold",
            "Advanced: the step-cache threshold (relative change of the first block's residual under which a step reuses), 0-10, replacing the mode's; "
            + "with lossless it turns on the caching of the default StepCacheOptions.", 0, 10);
        var threads = CliOptions.Threads();
        var device = CliOptions.Device();
        var loras = CliOptions.Loras();
        var progress = new Option<string>("--progress") { Description = "Progress on standard error: auto (a bar on a terminal, lines otherwise), bar, lines or none.", DefaultValueFactory = _ => "auto" };
        progress.AcceptOnlyFromAmong(ProgressDisplay.ModeNames);
        var json = new Option<bool>("--json") { Description = "Print the result as one JSON object on standard output (files, seeds, size, timings, warnings)." };
        var noMetadata = new Option<bool>("--no-metadata")
        {
            Description = "Leave the generation parameters (prompt, seed, steps, guidance, size, model) out of the image files; by default they are stored as A1111's "
                + "'parameters' text (PNG text chunk, JPEG/WebP Exif UserComment).",
        };

        var command = new Command("generate", "Generate images: noise -> FLUX transformer steps -> autoencoder -> image files. Standard output lists the files written.")
        {
            prompt, model, transformer, ae, clip, t5, maxLength, demo, aspect, imageSize, width, height, steps, guidance, seed, count, format, quality,
            outPath, latents, image, strength, promptEmbeds, saveLatents, rounding, weights, activations, threads, device, loras, progress, json, noMetadata,
            speedMode, cacheThreshold,
        };
        command.Validators.Add(result =>
        {
            bool sized = result.Given(width) || result.Given(height);
            if (result.Given(width) != result.Given(height))
            {
                result.AddError(result.Given(width) ? width : height, "Give both --width and --height, or neither (and --aspect-ratio and --image-size).");
            }
            else if (sized && (result.Given(aspect) || result.Given(imageSize)))
            {
                result.AddError(result.Given(aspect) ? aspect : imageSize, "Give either --width and --height, or --aspect-ratio and --image-size, not both.");
            }

            if (result.Given(strength) && !result.Given(image))
            {
                result.AddError(strength, "--strength applies to image-to-image: give --image with it.");
            }
            else if (result.GetResult(strength)?.Tokens is [.., var last]
                     && double.TryParse(last.Value, NumberStyles.Float, CultureInfo.InvariantCulture, out double given) && given == 0)
            {
                // Read from the token: the range check (0-1) has passed 0, and GetValue would throw on a value it refused.
                result.AddError(strength, "--strength must be greater than 0 (0 would leave the image as it is).");
            }

            if (result.GetValue(demo) && (result.Given(model) || result.Given(transformer) || result.Given(ae) || result.Given(clip) || result.Given(t5)))
            {
                result.AddError(demo, "--demo uses its own tiny models; leave out --model, --transformer, --ae, --clip and --t5.");
            }

            bool prompted = result.GetResult(prompt) is { Tokens.Count: > 0 };
            if (prompted && result.Given(promptEmbeds))
            {
                result.AddError(promptEmbeds, "--prompt-embeds replaces the prompt: give one or the other, not both.");
            }
            else if (!prompted && !result.Given(promptEmbeds) && !result.GetValue(demo))
            {
                result.AddError("Give a prompt (or --prompt-embeds).");
            }

            if (!result.GetValue(demo) && !result.Given(model) && !(result.Given(transformer) && result.Given(ae)))
            {
                result.AddError(result.Given(transformer) ? ae : result.Given(ae) ? transformer : model,
                    "No model given: pass --model DIR (a diffusers folder), or --transformer PATH and --ae PATH, or --demo.");
            }
        });
        command.SetAction(async (parsed, cancellationToken) =>
        {
            var request = new GenerateCliRequest
            {
                Prompt = parsed.GetValue(prompt),
                Model = parsed.GetValue(model),
                Transformer = parsed.GetValue(transformer),
                Autoencoder = parsed.GetValue(ae),
                Clip = parsed.GetValue(clip),
                T5 = parsed.GetValue(t5),
                MaxLength = parsed.GetValue(maxLength),
                Demo = parsed.GetValue(demo),
                AspectRatio = parsed.GetValue(aspect),
                ImageSize = parsed.GetValue(imageSize),
                Width = parsed.GetValue(width),
                Height = parsed.GetValue(height),
                Steps = parsed.GetValue(steps),
                Guidance = parsed.GetValue(guidance),
                Seed = parsed.GetValue(seed),
                NumImages = parsed.GetValue(count),
                Format = parsed.GetValue(format),
                Quality = parsed.GetValue(quality),
                Output = parsed.GetValue(outPath),
                Latents = parsed.GetValue(latents),
                Image = parsed.GetValue(image),
                Strength = parsed.GetValue(strength),
                PromptEmbeds = parsed.GetValue(promptEmbeds),
                SaveLatents = parsed.GetValue(saveLatents),
                Rounding = parsed.GetValue(rounding) == "truncate" ? PixelRounding.Truncate : PixelRounding.Round,
                SpeedMode = SpeedModes.TryParse(parsed.GetValue(speedMode), out SpeedMode mode) ? mode : SpeedMode.Lossless,
                CacheThreshold = parsed.GetValue(cacheThreshold),
                WeightFormat = TransformerForward.ParseWeightFormat(parsed.GetValue(weights)!),
                Activations = TransformerForward.ParseActivationPrecision(parsed.GetValue(activations)!),
                Threads = parsed.GetValue(threads),
                Device = parsed.GetValue(device),
                Loras = parsed.GetValue(loras) ?? [],
                Progress = ProgressDisplay.ParseMode(parsed.GetValue(progress)!),
                Json = parsed.GetValue(json),
                WriteMetadata = !parsed.GetValue(noMetadata),
            };
            await ImageGeneration.RunAsync(request, console, cancellationToken).ConfigureAwait(false);
            return ExitCodes.Success;
        });
        return command;
    }

    /// <summary>
    /// A request the pipeline refused, said with the option at fault: <c>--quality: output_quality must be …</c>
    /// reads as <c>--quality must be …</c>. (The options' own checks catch nearly every value before this.)
    /// </summary>
    public static string DescribeRequestError(GenerationRequestException e)
    {
        ArgumentNullException.ThrowIfNull(e);
        string text = e.Message;
        string parameter = $" (Parameter '{e.ParamName}')";   // what ArgumentException adds
        if (text.EndsWith(parameter, StringComparison.Ordinal))
        {
            text = text[..^parameter.Length];
        }

        if (!OptionOfField.TryGetValue(e.Field, out string? option))
        {
            return text;
        }

        string message = text.StartsWith(e.Field + " ", StringComparison.Ordinal) ? option + text[e.Field.Length..] : text;
        return message.Contains(option, StringComparison.Ordinal) ? message : $"{option}: {message}";
    }
}
