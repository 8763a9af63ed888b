using System.CommandLine;
using FluxNative.Tokenizers;

namespace FluxNative.Cli;

/// <summary>
/// <c>flux encode (--model DIR | --clip DIR --t5 DIR | --demo) [--max-length N] PROMPT --out FILE</c>: runs the
/// tokenizers and text encoders and writes <c>txt</c> [1, L, T5 width] and <c>y</c> [1, CLIP width], exactly
/// what <c>flux generate --prompt-embeds</c> reads.
/// </summary>
internal static class EncodeCommand
{
    public static Command Create(CliConsole console)
    {
        var prompt = new Argument<string>("prompt") { Description = "The prompt." };
        var model = CliOptions.ExistingPath("--model", "A diffusers model folder (text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/) or an engine file (flux build).");
        var clip = CliOptions.ExistingPath("--clip", "The CLIP text encoder folder; overrides --model's.");
        var t5 = CliOptions.ExistingPath("--t5", "The T5 encoder folder; overrides --model's.");
        var demo = new Option<bool>("--demo") { Description = "Use the demo's tiny random encoders (with the real tokenizers)." };
        var maxLength = CliOptions.Number("--max-length", $"T5 tokens, 1-{CliOptions.MaxT5Length} (512 for dev, 256 for schnell).", 1, CliOptions.MaxT5Length, T5Tokenizer.DevMaxLength);
        var outPath = new Option<string>("--out", "-o") { Description = "The safetensors file to write (txt, y as F32).", Required = true };
        var threads = CliOptions.Threads();
        var device = CliOptions.Device();
        var weights = new Option<string>("--weights-dtype") { Description = "How T5 holds its linear weights: stored, f32, bf16 or fp8.", DefaultValueFactory = _ => "stored" };
        weights.AcceptOnlyFromAmong(TransformerForward.WeightFormatNames);

        var command = new Command("encode", "Encode a prompt with the CLIP and T5 encoders into the embeddings flux generate --prompt-embeds reads.")
        {
            prompt, model, clip, t5, demo, maxLength, outPath, weights, threads, device,
        };
        command.Validators.Add(result =>
        {
            if (result.GetValue(demo) && (result.Given(model) || result.Given(clip) || result.Given(t5)))
            {
                result.AddError(demo, "--demo uses its own tiny encoders; leave out --model, --clip and --t5.");
            }
        });
        command.SetAction(parsed =>
        {
            PromptEncoderSources? sources = parsed.GetValue(demo)
                ? DemoModels.Write(Path.Combine(Path.GetTempPath(), "fluxnative-demo-2")).ResolvePromptEncoder()
                : new FluxPipelineSources { ModelDirectory = parsed.GetValue(model), Clip = parsed.GetValue(clip), T5 = parsed.GetValue(t5) }.ResolvePromptEncoder();
            if (sources is null)
            {
                throw new CliInputException("No text encoders given: pass --model (a diffusers folder with text_encoder/ and text_encoder_2/), or --clip and --t5, or --demo.");
            }

            string path = parsed.GetValue(outPath)!;
            OutputTarget.CheckWritable(path, "--out");
            using PromptEncoder encoder = PromptEncoder.Load(sources, parsed.GetValue(maxLength), TransformerForward.ParseWeightFormat(parsed.GetValue(weights)!), parsed.GetValue(threads), device: parsed.GetValue(device));
            string text = parsed.GetValue(prompt)!;
            foreach (string warning in encoder.TruncationWarnings(text))
            {
                console.Warn(warning);
            }

            var clock = System.Diagnostics.Stopwatch.StartNew();
            PromptEmbeddings embeddings = encoder.Encode(text);
            new SafetensorsWriter()
                .Add("txt", embeddings.Txt, 1, embeddings.Tokens, embeddings.ContextDim)
                .Add("y", embeddings.Pooled, 1, embeddings.PooledDim)
                .Write(path);
            console.Note(FormattableString.Invariant(
                $"encoded  txt [1, {embeddings.Tokens}, {embeddings.ContextDim}], y [1, {embeddings.PooledDim}] in {clock.Elapsed.TotalMilliseconds:F0} ms"));
            console.Out.WriteLine(path);
            return ExitCodes.Success;
        });
        return command;
    }
}
