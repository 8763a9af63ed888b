using System.CommandLine;

namespace FluxNative.Cli;

/// <summary>
/// <c>flux forward --model PATH --inputs FILE --out FILE [--weights-dtype stored|f32|bf16|fp8] [--activations f32|bf16] [--threads N] [--repeat N]</c>.
/// Declares the options only; <see cref="TransformerForward"/> does the work.
/// </summary>
internal static class ForwardCommand
{
    public static Command Create(CliConsole console)
    {
        var model = new Option<string>("--model")
        {
            Description = "The FLUX transformer: a BFL .safetensors file or a diffusers folder.",
            Required = true,
        };
        var inputs = new Option<string>("--inputs")
        {
            Description = "A safetensors file with img [B,Limg,in], img_ids [B,Limg,3], txt [B,Ltxt,ctx], txt_ids [B,Ltxt,3], y [B,vec], timesteps [B] and, for dev models, guidance [B] (any float dtype).",
            Required = true,
        };
        var outPath = new Option<string>("--out")
        {
            Description = "Where to write the output: a safetensors file with out [B,Limg,out_channels] as F32.",
            Required = true,
        };
        var weights = new Option<string>("--weights-dtype")
        {
            Description = "How to hold the linear weights: stored (as in the file), f32, bf16 or fp8 (e4m3, per-channel scales).",
            DefaultValueFactory = _ => "stored",
        };
        weights.AcceptOnlyFromAmong(TransformerForward.WeightFormatNames);

        var activations = new Option<string>("--activations")
        {
            Description = "Precision of the activations entering the linear layers: f32 (exact) or bf16 (faster bf16 dot products, ~1e-2 relative error; only for bf16 weights on CPUs with AVX512-BF16, exact elsewhere).",
            DefaultValueFactory = _ => "f32",
        };
        activations.AcceptOnlyFromAmong(TransformerForward.ActivationPrecisionNames);

        var threads = CliOptions.Threads("Threads for the forward pass; 0 uses the process-wide pool (one per core, or FX_NUM_THREADS).");
        var device = CliOptions.Device();
        var loras = CliOptions.Loras();
        var repeat = CliOptions.Number("--repeat", "After the forward that writes --out, time N more and print the median, min and max milliseconds per forward.", 1, 1_000_000);

        var command = new Command("forward", "Run the FLUX transformer once on inputs from a safetensors file and write its output; optionally time it.")
        {
            model, inputs, outPath, weights, activations, threads, device, loras, repeat,
        };
        command.SetAction(parsed =>
        {
            var request = new ForwardRequest(
                parsed.GetValue(model)!,
                parsed.GetValue(inputs)!,
                parsed.GetValue(outPath)!,
                TransformerForward.ParseWeightFormat(parsed.GetValue(weights)!),
                parsed.GetValue(threads),
                parsed.GetValue(repeat),
                TransformerForward.ParseActivationPrecision(parsed.GetValue(activations)!),
                parsed.GetValue(device),
                parsed.GetValue(loras));
            TransformerForward.Run(request, console.Out);
            return ExitCodes.Success;
        });
        return command;
    }
}
