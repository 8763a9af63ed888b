using System.CommandLine;

namespace FluxNative.Cli;

/// <summary>
/// <c>flux generate [PROMPT] (--model DIR | --transformer PATH --ae PATH | --demo) [options]</c>.
/// Declares the options only; <see cref="ImageGeneration"/> does the work.
/// </summary>
internal static class GenerateCommand
{
    public static Command Create(TextWriter output)
    {
        var prompt = new Argument<string?>("prompt") { Description = "The prompt.", Arity = ArgumentArity.ZeroOrOne };
        var model = new Option<string?>("--model") { Description = "A diffusers-layout model folder (model_index.json, transformer/, vae/, text_encoder/, text_encoder_2/, tokenizers)." };
        var transformer = new Option<string?>("--transformer") { Description = "The transformer: a BFL single file (flux1-dev.safetensors) or a diffusers transformer/ folder; overrides --model's." };
        var ae = new Option<string?>("--ae") { Description = "The autoencoder: BFL ae.safetensors or a diffusers vae/ folder; overrides --model's." };
        var clip = new Option<string?>("--clip") { Description = "The CLIP text encoder folder (diffusers text_encoder/); its tokenizer is found inside it or in the tokenizer/ beside it. Overrides --model's." };
        var t5 = new Option<string?>("--t5") { Description = "The T5 encoder folder (diffusers text_encoder_2/); its tokenizer inside it or in tokenizer_2/ beside it. Overrides --model's." };
        var maxLength = new Option<int?>("--max-length") { Description = "T5 tokens per prompt (default 512 for dev, 256 for schnell; 64 with --demo)." };
        var demo = new Option<bool>("--demo") { Description = "Run the whole pipeline on tiny random models this program writes itself, with the real tokenizers (random weights: the picture is noise, not the prompt)." };
        var aspect = new Option<string?>("--aspect-ratio") { Description = $"One of {string.Join(", ", FluxPipeline.AspectRatios.Keys)} (default 1:1)." };
        aspect.AcceptOnlyFromAmong([.. FluxPipeline.AspectRatios.Keys]);
        var imageSize = new Option<int?>("--image-size") { Description = "Longest side in pixels (default 1024; 256 with --demo)." };
        var width = new Option<int?>("--width") { Description = "Width in pixels (with --height, instead of --aspect-ratio); rounded to a multiple of 16." };
        var height = new Option<int?>("--height") { Description = "Height in pixels (with --width)." };
        var steps = new Option<int?>("--steps") { Description = "Denoising steps, 1-50 (default 28 for dev, 4 for schnell)." };
        var guidance = new Option<double?>("--guidance") { Description = "Distilled guidance, 0-10 (default 3.5; schnell ignores it)." };
        var seed = new Option<long?>("--seed") { Description = "Seed; -1 or absent for a random one. Image k uses seed + k." };
        var count = new Option<int>("-n", "--num-images") { Description = "Images to generate, 1-8.", DefaultValueFactory = _ => 1 };
        var format = new Option<string?>("--format") { Description = "png, jpg or webp (default: from -o's extension, else png)." };
        format.AcceptOnlyFromAmong("png", "jpg", "jpeg", "webp");
        var quality = new Option<int>("--quality") { Description = "JPEG/WebP quality, 1-100.", DefaultValueFactory = _ => 80 };
        var outPath = new Option<string?>("-o", "--output") { Description = "Output file (default flux-SEED.EXT); with -n N, out.png becomes out-1.png ... out-N.png." };
        var latents = new Option<string?>("--latents") { Description = "A safetensors file with latents [N, 16, h, w] to use instead of seeded noise." };
        var promptEmbeds = new Option<string?>("--prompt-embeds") { Description = "A safetensors file with txt [B, L, 4096] and y [B, 768] (B = 1 or N) to use instead of the text encoders (flux encode writes one)." };
        var saveLatents = new Option<string?>("--save-latents") { Description = "Write the final latents [N, 16, h, w] (before decoding) to this safetensors file." };
        var rounding = new Option<string>("--rounding") { Description = "8-bit conversion: round (as diffusers) or truncate (as BFL).", DefaultValueFactory = _ => "round" };
        rounding.AcceptOnlyFromAmong("round", "truncate");
        var weights = new Option<string>("--weights-dtype") { Description = "How the transformer holds its weights: stored, f32, bf16 or fp8.", DefaultValueFactory = _ => "stored" };
        weights.AcceptOnlyFromAmong(TransformerForward.WeightFormatNames);
        var activations = new Option<string>("--activations") { Description = "Transformer activation precision: f32 (exact) or bf16 (faster, ~1e-2).", DefaultValueFactory = _ => "f32" };
        activations.AcceptOnlyFromAmong(TransformerForward.ActivationPrecisionNames);
        var threads = new Option<int>("--threads") { Description = "Native threads; 0 for one per core.", DefaultValueFactory = _ => 0 };

        var command = new Command("generate", "Generate images: noise -> FLUX transformer steps -> autoencoder -> image files.")
        {
            prompt, model, transformer, ae, clip, t5, maxLength, demo, aspect, imageSize, width, height, steps, guidance, seed, count, format, quality,
            outPath, latents, promptEmbeds, saveLatents, rounding, weights, activations, threads,
        };
        command.SetAction(parsed =>
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
                PromptEmbeds = parsed.GetValue(promptEmbeds),
                SaveLatents = parsed.GetValue(saveLatents),
                Rounding = parsed.GetValue(rounding) == "truncate" ? PixelRounding.Truncate : PixelRounding.Round,
                WeightFormat = TransformerForward.ParseWeightFormat(parsed.GetValue(weights)!),
                Activations = TransformerForward.ParseActivationPrecision(parsed.GetValue(activations)!),
                Threads = parsed.GetValue(threads),
            };
            ImageGeneration.Run(request, output, CancellationToken.None);
            return ExitCodes.Success;
        });
        return command;
    }
}
