using System.CommandLine;

namespace FluxNative.Cli;

/// <summary>
/// <c>flux tokenize --tokenizer clip|t5 [--max-length N] [--tokenizer-path DIR | --model DIR] [--json] TEXT</c>;
/// without a path, the tokenizers shipped with flux (FLUX's own CLIP and T5 files).
/// Declares the options only; <see cref="PromptTokenization"/> does the work.
/// </summary>
internal static class TokenizeCommand
{
    public static Command Create(CliConsole console)
    {
        var text = new Argument<string>("text") { Description = "The prompt to tokenize (quote it)." };
        var tokenizer = new Option<string>("--tokenizer")
        {
            Description = "clip (FLUX's tokenizer/, CLIP BPE, 77 tokens) or t5 (tokenizer_2/, T5 Unigram, 512 tokens).",
            Required = true,
        };
        tokenizer.AcceptOnlyFromAmong(PromptTokenization.TokenizerNames);

        var maxLength = CliOptions.Number<int>("--max-length",
            $"Pad or truncate to this many ids, 1-{CliOptions.MaxT5Length} (default: 77 for clip, 512 for t5; BFL uses 256 for schnell).", 1, CliOptions.MaxT5Length);

        var tokenizerPath = new Option<string?>("--tokenizer-path")
        {
            Description = "A folder with the tokenizer files: vocab.json + merges.txt (clip), tokenizer.json or spiece.model (t5). Default: the ones shipped with flux.",
        };
        var model = new Option<string?>("--model")
        {
            Description = "A diffusers-layout FLUX folder; its tokenizer/ (clip) or tokenizer_2/ (t5) is used.",
        };
        var json = new Option<bool>("--json") { Description = "Print one JSON object (tokenizer, max_length, ids), for machines." };

        var command = new Command("tokenize", "Print the token ids FLUX's text encoders get for a prompt (CLIP BPE or T5 Unigram, padded as the pipelines do).")
        {
            text, tokenizer, maxLength, tokenizerPath, model, json,
        };
        command.SetAction(parsed =>
        {
            var request = new TokenizeRequest(
                parsed.GetValue(text)!,
                parsed.GetValue(tokenizer)!,
                parsed.GetValue(maxLength),
                parsed.GetValue(tokenizerPath),
                parsed.GetValue(model),
                parsed.GetValue(json));
            PromptTokenization.Run(request, console);
            return ExitCodes.Success;
        });
        return command;
    }
}
