using System.CommandLine;

namespace FluxNative.Cli;

/// <summary>
/// <c>flux encode (--model DIR | --clip DIR --t5 DIR | --demo) [--max-length N] PROMPT --out FILE</c>: runs the
/// tokenizers and text encoders and writes <c>txt</c> [1, L, T5 width] and <c>y</c> [1, CLIP width], exactly
/// what <c>flux generate --prompt-embeds</c> reads.
/// </summary>
internal static class EncodeCommand
{
    public static Command Create(TextWriter output)
    {
        var prompt = new Argument<string>("prompt") { Description = "The prompt." };
        var model = new Option<string?>("--model") { Description = "A diffusers model folder (text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/)." };
        var clip = new Option<string?>("--clip") { Description = "The CLIP text encoder folder; overrides --model's." };
        var t5 = new Option<string?>("--t5") { Description = "The T5 encoder folder; overrides --model's." };
        var demo = new Option<bool>("--demo") { Description = "Use the demo's tiny random encoders (with the real tokenizers)." };
        var maxLength = new Option<int>("--max-length") { Description = "T5 tokens (512 for dev, 256 for schnell).", DefaultValueFactory = _ => 512 };
        maxLength.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() is < 1 or > 4096)
            {
                result.AddError("--max-length must be between 1 and 4096.");
            }
        });
        var outPath = new Option<string>("--out", "-o") { Description = "The safetensors file to write (txt, y as F32).", Required = true };
        var weights = new Option<string>("--weights-dtype") { Description = "How T5 holds its linear weights: stored, f32, bf16 or fp8.", DefaultValueFactory = _ => "stored" };
        weights.AcceptOnlyFromAmong(TransformerForward.WeightFormatNames);

        var command = new Command("encode", "Encode a prompt with the CLIP and T5 encoders into the embeddings flux generate --prompt-embeds reads.")
        {
            prompt, model, clip, t5, demo, maxLength, outPath, weights,
        };
        command.SetAction(parsed =>
        {
            PromptEncoderSources? sources = parsed.GetValue(demo)
                ? DemoModels.Write(Path.Combine(Path.GetTempPath(), "fluxnative-demo-2")).ResolvePromptEncoder()
                : PromptEncoderSources.Resolve(parsed.GetValue(model), parsed.GetValue(clip), parsed.GetValue(t5));
            if (sources is null)
            {
                throw new CliInputException("No text encoders given: pass --model (a diffusers folder with text_encoder/ and text_encoder_2/), or --clip and --t5, or --demo.");
            }

            using PromptEncoder encoder = PromptEncoder.Load(sources, parsed.GetValue(maxLength), TransformerForward.ParseWeightFormat(parsed.GetValue(weights)!));
            var clock = System.Diagnostics.Stopwatch.StartNew();
            PromptEmbeddings embeddings = encoder.Encode(parsed.GetValue(prompt)!);
            string path = parsed.GetValue(outPath)!;
            new SafetensorsWriter()
                .Add("txt", embeddings.Txt, 1, embeddings.Tokens, embeddings.ContextDim)
                .Add("y", embeddings.Pooled, 1, embeddings.PooledDim)
                .Write(path);
            output.WriteLine(FormattableString.Invariant(
                $"wrote    {path}: txt [1, {embeddings.Tokens}, {embeddings.ContextDim}], y [1, {embeddings.PooledDim}] in {clock.Elapsed.TotalMilliseconds:F0} ms"));
            return ExitCodes.Success;
        });
        return command;
    }
}
