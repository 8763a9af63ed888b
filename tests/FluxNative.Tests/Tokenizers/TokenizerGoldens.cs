using System.Text.Json;
using FluxNative.Testing;
using FluxNative.Tokenizers;

namespace FluxNative.Tests.Tokenizers;

/// <summary>One case of native/tests/data/tokenizers/{clip,t5}-cases.json (written by tools/reference/make_tokenizer_goldens.py).</summary>
/// <param name="Name">Unique name.</param>
/// <param name="Category">ascii, cjk, emoji, whitespace, control, html, special, long, prompt, …</param>
/// <param name="Text">The input text.</param>
/// <param name="Ids">The expected ids: CLIP with BOS and EOS, T5 with &lt;/s&gt;; untruncated, unpadded.</param>
/// <param name="References">Each reference implementation's ids, or null where it gave the expected ids ("same").</param>
internal sealed record TokenizerCase(string Name, string Category, string Text, int[] Ids, IReadOnlyDictionary<string, int[]?> References);

/// <summary>The committed golden data and tokenizer files, loaded once per test run.</summary>
internal static class TokenizerGoldens
{
    private static readonly Lazy<IReadOnlyList<TokenizerCase>> ClipCasesLazy = new(() => Load("clip-cases.json"));
    private static readonly Lazy<IReadOnlyList<TokenizerCase>> T5CasesLazy = new(() => Load("t5-cases.json"));
    private static readonly Lazy<ClipTokenizer> ClipLazy = new(() => ClipTokenizer.FromDirectory(ClipFiles));
    private static readonly Lazy<T5Tokenizer> T5Lazy = new(() => T5Tokenizer.FromDirectory(T5Files));
    private static readonly Lazy<T5Tokenizer> T5FromModelLazy = new(() => T5Tokenizer.FromSentencePieceModel(Path.Combine(T5Files, "spiece.model")));

    public static string DataFolder => Path.Combine(RepoPaths.Root, "native", "tests", "data", "tokenizers");

    /// <summary>Copies of FLUX.1's tokenizer/ (vocab.json, merges.txt, …).</summary>
    public static string ClipFiles => Path.Combine(DataFolder, "files", "clip");

    /// <summary>Copies of FLUX.1's tokenizer_2/ (tokenizer.json, spiece.model, …).</summary>
    public static string T5Files => Path.Combine(DataFolder, "files", "t5");

    public static IReadOnlyList<TokenizerCase> ClipCases => ClipCasesLazy.Value;

    public static IReadOnlyList<TokenizerCase> T5Cases => T5CasesLazy.Value;

    public static ClipTokenizer Clip => ClipLazy.Value;

    /// <summary>T5 loaded from tokenizer.json (what <see cref="T5Tokenizer.FromDirectory"/> picks).</summary>
    public static T5Tokenizer T5 => T5Lazy.Value;

    /// <summary>T5 converted from spiece.model.</summary>
    public static T5Tokenizer T5FromModel => T5FromModelLazy.Value;

    public static TheoryData<string> Names(IReadOnlyList<TokenizerCase> cases)
    {
        var data = new TheoryData<string>();
        foreach (TokenizerCase c in cases)
        {
            data.Add(c.Name);
        }

        return data;
    }

    public static JsonElement Header(string file)
    {
        using JsonDocument document = JsonDocument.Parse(File.ReadAllText(Path.Combine(DataFolder, file)));
        return document.RootElement.Clone();
    }

    private static List<TokenizerCase> Load(string file)
    {
        using JsonDocument document = JsonDocument.Parse(File.ReadAllText(Path.Combine(DataFolder, file)));
        var cases = new List<TokenizerCase>();
        foreach (JsonElement c in document.RootElement.GetProperty("cases").EnumerateArray())
        {
            var references = new Dictionary<string, int[]?>();
            foreach (JsonProperty reference in c.GetProperty("references").EnumerateObject())
            {
                references[reference.Name] = reference.Value.ValueKind == JsonValueKind.String ? null : Ints(reference.Value);
            }

            cases.Add(new TokenizerCase(
                c.GetProperty("name").GetString()!,
                c.GetProperty("category").GetString()!,
                c.GetProperty("text").GetString()!,
                Ints(c.GetProperty("ids")),
                references));
        }

        return cases;
    }

    public static int[] Ints(JsonElement array) => [.. array.EnumerateArray().Select(e => e.GetInt32())];
}
