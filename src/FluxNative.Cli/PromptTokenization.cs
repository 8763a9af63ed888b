using System.Text.Json;
using FluxNative.Tokenizers;

namespace FluxNative.Cli;

/// <summary>What <c>flux tokenize</c> was asked to do.</summary>
/// <param name="Text">The prompt.</param>
/// <param name="Tokenizer">clip or t5.</param>
/// <param name="MaxLength">Output length; null for the tokenizer's default (77 or 512).</param>
/// <param name="TokenizerPath">A folder with the tokenizer files, or null.</param>
/// <param name="ModelPath">A diffusers FLUX folder whose tokenizer/ or tokenizer_2/ to use, or null.</param>
/// <param name="Json">Print JSON instead of text.</param>
internal sealed record TokenizeRequest(string Text, string Tokenizer, int? MaxLength, string? TokenizerPath, string? ModelPath, bool Json);

/// <summary>
/// <c>flux tokenize</c>: loads the CLIP or T5 tokenizer from a folder and prints the padded ids of a prompt, one
/// line of space-separated ids (or one JSON object). File problems are input errors: one line, exit code 2.
/// </summary>
internal static class PromptTokenization
{
    public static readonly string[] TokenizerNames = ["clip", "t5"];

    /// <summary>Tokenizes as requested, writes the ids, and returns them (for the tests).</summary>
    public static int[] Run(TokenizeRequest request, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(output);
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
        try
        {
            ids = clip ? ClipTokenizer.FromDirectory(folder).Encode(request.Text, maxLength)
                : T5Tokenizer.FromDirectory(folder).Encode(request.Text, maxLength);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or InvalidDataException)
        {
            throw new CliInputException(e.Message);
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
            throw new CliInputException("Give --tokenizer-path DIR (the tokenizer files) or --model DIR (a diffusers FLUX folder).");
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
