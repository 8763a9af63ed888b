using System.CommandLine;
using FluxNative.Interop;

namespace FluxNative.Cli;

// The commands only declare their options and hand the parsed values to a service
// (CheckpointReport, ModelFolderReport, TinyModelRequest, LibraryReport), which is where the tests look.

/// <summary><c>flux inspect PATH [--json] [--tensors]</c>.</summary>
internal static class InspectCommand
{
    public static Command Create(CliConsole console)
    {
        var path = new Argument<string>("path")
        {
            Description = "A .safetensors file, a *.safetensors.index.json, a component folder (transformer/, vae/, ...), "
                + "or a whole model: a diffusers folder (transformer/, vae/, text_encoder/, text_encoder_2/) or a folder of BFL files.",
        };
        var json = new Option<bool>("--json") { Description = "Print the native description as JSON, for machines." };
        var tensors = new Option<bool>("--tensors") { Description = "List every tensor: name, dtype and shape." };

        var command = new Command("inspect", "Show what a checkpoint or a whole model folder is: model, inferred configuration, parameters, dtypes, files and problems.")
        {
            path, json, tensors,
        };
        command.SetAction(parsed =>
        {
            string target = parsed.GetValue(path)!;
            if (ModelFolderReport.FindParts(target) is { } folder)
            {
                ModelFolderReport.Inspect(folder, parsed.GetValue(json), parsed.GetValue(tensors), console.Out);
            }
            else
            {
                CheckpointReport.Inspect(target, parsed.GetValue(json), parsed.GetValue(tensors), console.Out);
            }

            return ExitCodes.Success;
        });
        return command;
    }
}

/// <summary><c>flux tiny-model --kind flux|ae|t5|clip ... -o PATH</c>.</summary>
internal static class TinyModelCommand
{
    public static Command Create(CliConsole console)
    {
        var kind = new Option<string>("--kind")
        {
            Description = "The model: flux (transformer), ae (autoencoder), t5 or clip (text encoders).",
            DefaultValueFactory = _ => "flux",
        };
        kind.AcceptOnlyFromAmong(TinyModelRequest.Kinds);

        var variant = new Option<string>("--variant")
        {
            Description = "FLUX transformer variant: dev (with guidance embedder) or schnell.",
            DefaultValueFactory = _ => "dev",
        };
        variant.AcceptOnlyFromAmong("dev", "schnell");

        var layout = new Option<string?>("--layout")
        {
            Description = "bfl (one file) or diffusers (a folder with config.json). Default: bfl for flux and ae, diffusers for t5 and clip (their only layout).",
        };
        layout.AcceptOnlyFromAmong("bfl", "diffusers");

        var dtype = new Option<string>("--dtype")
        {
            Description = "Weight dtype: f32, bf16 or f16.",
            DefaultValueFactory = _ => "bf16",
        };
        dtype.AcceptOnlyFromAmong("f32", "bf16", "f16");

        var shards = CliOptions.Number("--shards", "Diffusers layout: the number of weight files (more than 1 writes an index).", 1, 10_000, 1);
        var seed = CliOptions.Number("--seed", "The weights are a deterministic function of the seed.", 0UL, ulong.MaxValue, 0UL);
        var hiddenSize = SizeOption("--hidden-size", "Hidden size (flux: default 64; the published 3072), or the autoencoder's base width (default 32; published 128).");
        var numHeads = SizeOption("--num-heads", "Attention heads (flux: default 2; published 24).");
        var depth = SizeOption("--depth", "flux: double blocks (default 2; published 19); ae: resolution levels (default 2; published 4); t5/clip: layers.");
        var depthSingle = SizeOption("--depth-single", "flux: single blocks (default 3; published 38); ae: ResnetBlocks per level (default 1; published 2).");
        var path = new Option<string>("--output", "-o")
        {
            Description = "Where to write: a .safetensors file (bfl) or a folder (diffusers).",
            Required = true,
        };

        var command = new Command("tiny-model", "Write a tiny random checkpoint with the published tensor names (for tests and demos).")
        {
            kind, variant, layout, dtype, shards, seed, hiddenSize, numHeads, depth, depthSingle, path,
        };
        command.SetAction(parsed =>
        {
            var request = new TinyModelRequest(
                parsed.GetValue(kind)!, parsed.GetValue(variant)!, parsed.GetValue(layout), parsed.GetValue(dtype)!,
                parsed.GetValue(shards), parsed.GetValue(seed), parsed.GetValue(hiddenSize), parsed.GetValue(numHeads),
                parsed.GetValue(depth), parsed.GetValue(depthSingle));
            string written = request.Write(parsed.GetValue(path)!);
            console.Out.WriteLine(written);
            return ExitCodes.Success;
        });
        return command;
    }

    private static Option<int> SizeOption(string name, string description) =>
        CliOptions.Number(name, description + " 0 or absent: the default.", 0, 1 << 16, 0);
}

/// <summary><c>flux info [--json]</c>: which native library is used and what it can do.</summary>
internal static class InfoCommand
{
    public static Command Create(CliConsole console)
    {
        var json = new Option<bool>("--json") { Description = "Print one JSON object, for machines." };
        var command = new Command("info", "Show the native library: where it was found (every path tried), its version, ABI, backends, CPU features and CUDA.")
        {
            json,
        };
        command.SetAction(parsed =>
        {
            FluxNativeDiagnostics diagnostics = FluxNativeLibrary.Diagnose();
            if (parsed.GetValue(json))
            {
                LibraryReport.WriteJson(diagnostics, console.Out);
            }
            else
            {
                LibraryReport.Write(diagnostics, console.Out);
            }

            return diagnostics.IsLoaded ? ExitCodes.Success : ExitCodes.Failure;
        });
        return command;
    }
}
