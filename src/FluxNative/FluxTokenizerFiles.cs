namespace FluxNative;

/// <summary>
/// The CLIP and T5 tokenizer files of FLUX.1 that ship with FluxNative (provenance:
/// native/tests/data/tokenizers/README.md): the folder has <c>clip/</c> (vocab.json, merges.txt) and <c>t5/</c>
/// (spiece.model, tokenizer.json). They serve the demo, <c>flux tokenize</c>, and any model folder without
/// tokenizers of its own (pass <see cref="Clip"/> and <see cref="T5"/> as <see cref="FluxPipelineSources.ClipTokenizer"/>
/// and <see cref="FluxPipelineSources.T5Tokenizer"/>).
/// </summary>
public static class FluxTokenizerFiles
{
    /// <summary>
    /// Where the files are: the first of <c>tokenizers/</c> beside the application (where a build of this repository
    /// and the NuGet package's build step put them), beside the FluxNative assembly, and in the NuGet package folder
    /// itself (the assembly is in its <c>lib/&lt;tfm&gt;/</c>; a host that copied nothing still finds them there) that
    /// holds <c>clip/vocab.json</c>. When none does, the first of them, so that the error names the expected place.
    /// </summary>
    public static string Directory => Candidates().FirstOrDefault(Holds) ?? Candidates().First();

    /// <summary>The CLIP tokenizer folder (<c>vocab.json</c>, <c>merges.txt</c>).</summary>
    public static string Clip => Path.Combine(Directory, "clip");

    /// <summary>The T5 tokenizer folder (<c>spiece.model</c>, <c>tokenizer.json</c>).</summary>
    public static string T5 => Path.Combine(Directory, "t5");

    /// <summary>The places looked in, in order.</summary>
    internal static IEnumerable<string> Candidates()
    {
        yield return Path.Combine(AppContext.BaseDirectory, "tokenizers");
        string? assembly = Path.GetDirectoryName(typeof(FluxTokenizerFiles).Assembly.Location);
        if (!string.IsNullOrEmpty(assembly))
        {
            yield return Path.Combine(assembly, "tokenizers");
            yield return Path.GetFullPath(Path.Combine(assembly, "..", "..", "tokenizers"));
        }
    }

    private static bool Holds(string directory) => File.Exists(Path.Combine(directory, "clip", "vocab.json"));
}
