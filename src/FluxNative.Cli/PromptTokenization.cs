using System.Text.Json;
using FluxNative.Tokenizers;

namespace FluxNative.Cli;

/// <summary>What <c>flux tokenize</c> was asked to do.</summary>
/// <param name="Text">The prompt.</param>
/// <param name="Tokenizer">clip or t5.</param>
/// <param name="MaxLength">Output length; null for the tokenizer's default (77 or 512).</param>
/// <param name="TokenizerPath">A folder with the tokenizer files, or null (then <paramref name="ModelPath"/>'s, or the bundled ones).</param>
/// <param name="ModelPath">A diffusers FLUX folder whose tokenizer/ or tokenizer_2/ to use, or null.</param>
/// <param name="Json">Print JSON instead of text.</param>
internal sealed record TokenizeRequest(string Text, string Tokenizer, int? MaxLength, string? TokenizerPath, string? ModelPath, bool Json);

/// <summary>
/// <c>flux tokenize</c>: loads the CLIP or T5 tokenizer from a folder (by default the ones shipped with flux, FLUX's own)
/// and prints the padded ids of a prompt, one line of space-separated ids (or one JSON object); a prompt cut short is a
/// warning on standard error. File problems are input errors: one line, exit code 2.
/// </summary>
internal static class PromptTokenization
{
    public static readonly string[] TokenizerNames = ["clip", "t5"];

    /// <summary>Tokenizes as requested, writes the ids, and returns them (for the tests).</summary>
    public static int[] Run(TokenizeRequest request, CliConsole console)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(console);
        TextWriter output = console.Out;
        bool clip = request.Tokenizer switch
        {
            "clip" => true,
            "t5" => false,
            _ => throw new CliInputException($"Unknown tokenizer '{request.Tokenizer}'; expected one of {string.Join(", ", TokenizerNames)}."),
        };
        int maxLength = request.MaxLength ?? (clip ? ClipTokenizer.DefaultMaxLength : T5Tokenizer.DefaultMaxLength);
        if (maxLength < (clip ? 2 : 1))
        {
            throw new CliInputException($"--max-length {maxLength} is too small: the {request.Tokenizer} tokenizer needs at least {(clip ? 2 : 1)}.");
        }

        string folder = TokenizerFolder(request, clip);
        int[] ids;
        string? cut;
        try
        {
            if (clip)
            {
                ClipTokenizer tokenizer = ClipTokenizer.FromDirectory(folder);
                ids = tokenizer.Encode(request.Text, maxLength);
                cut = PromptEncoder.TruncationWarning("CLIP", tokenizer.Tokenize(request.Text).Length, maxLength, tokenizer.SpecialTokenCount);
            }
            else
            {
                T5Tokenizer tokenizer = T5Tokenizer.FromDirectory(folder);
                ids = tokenizer.Encode(request.Text, maxLength);
                cut = PromptEncoder.TruncationWarning("T5", tokenizer.Tokenize(request.Text).Length, maxLength, tokenizer.SpecialTokenCount);
            }
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or InvalidDataException)
        {
            throw new CliInputException(e.Message);
        }

        if (cut is not null)
        {
            console.Warn(cut);
        }

        if (request.Json)
        {
            output.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["tokenizer"] = request.Tokenizer,
                ["max_length"] = maxLength,
                ["ids"] = ids,
            }));
        }
        else
        {
            output.WriteLine(string.Join(' ', ids));
        }

        return ids;
    }

    private static string TokenizerFolder(TokenizeRequest request, bool clip)
    {
        if (request.TokenizerPath is not null && request.ModelPath is not null)
        {
            throw new CliInputException("Give either --tokenizer-path or --model, not both.");
        }

        if (request.TokenizerPath is not null)
        {
            return request.TokenizerPath;
        }

        if (request.ModelPath is null)
        {
            // The files shipped with flux: FLUX.1's own tokenizer/ and tokenizer_2/.
            return Path.Combine(DemoModels.TokenizerDirectory, clip ? "clip" : "t5");
        }

        if (!Directory.Exists(request.ModelPath))
        {
            throw new CliInputException($"Model folder not found: {request.ModelPath}");
        }

        string sub = clip ? "tokenizer" : "tokenizer_2";
        string folder = Path.Combine(request.ModelPath, sub);
        return Directory.Exists(folder) ? folder
            : throw new CliInputException($"{request.ModelPath} has no {sub}/ folder (the {request.Tokenizer} tokenizer of a diffusers FLUX model).");
    }
}
