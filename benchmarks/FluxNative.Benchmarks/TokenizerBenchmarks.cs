using BenchmarkDotNet.Attributes;
using FluxNative.Tokenizers;

namespace FluxNative.Benchmarks;

/// <summary>
/// Tokenizing a prompt for FLUX's two text encoders: CLIP to 77 ids and T5 to 512, with the per-word caches warm
/// (the steady state of a server or a batch) and cleared before every call (the first prompt a process sees).
/// Uses the tokenizer files committed under native/tests/data/tokenizers/files.
/// Run with: dotnet run -c Release --project benchmarks/FluxNative.Benchmarks -- --filter '*Tokenizer*' --job short
/// </summary>
[MemoryDiagnoser]
public class TokenizerBenchmarks
{
    /// <summary>A typical prompt: 17 CLIP tokens, 32 T5 pieces (before the special tokens).</summary>
    private const string ShortPrompt = "a cyberpunk samurai with glowing katana, rain, reflections, 8k, octane render";

    private ClipTokenizer clip = null!;
    private T5Tokenizer t5 = null!;
    private string longPrompt = string.Empty;

    [GlobalSetup]
    public void Setup()
    {
        string files = Path.Combine(RepoRoot(), "native", "tests", "data", "tokenizers", "files");
        clip = ClipTokenizer.FromDirectory(Path.Combine(files, "clip"));
        t5 = T5Tokenizer.FromDirectory(Path.Combine(files, "t5"));

        // Several hundred words, so the 512-id T5 output (and the 77-id CLIP one) is full and truncated.
        string[] sentences =
        [
            "A breathtaking panoramic view of an ancient city carved into a towering red sandstone cliff,",
            "with intricate temples, hanging gardens, rope bridges and waterfalls cascading into a turquoise river;",
            "merchants with colourful carts crowd the narrow winding streets while white birds circle the spires.",
            "Warm late-afternoon sunlight casts long dramatic shadows, volumetric haze, ultra-detailed matte painting,",
            "cinematic wide shot, 8k resolution, shot on 35mm film at f/2.8, ISO 200, award-winning photograph.",
        ];
        longPrompt = string.Join(' ', Enumerable.Range(0, 30).Select(i => sentences[i % sentences.Length]));
        if (t5.Tokenize(longPrompt).Length < 512 || clip.Tokenize(longPrompt).Length < 77)
        {
            throw new InvalidOperationException("The long prompt is meant to fill 512 T5 ids.");
        }
    }

    /// <summary>CLIP, a typical prompt, padded to 77; warm cache.</summary>
    [Benchmark(Baseline = true)]
    public int[] ClipShort77() => clip.Encode(ShortPrompt);

    /// <summary>CLIP, a long prompt truncated to 77; warm cache.</summary>
    [Benchmark]
    public int[] ClipLong77() => clip.Encode(longPrompt);

    /// <summary>CLIP, a long prompt truncated to 77, every word BPE'd afresh.</summary>
    [Benchmark]
    public int[] ClipLong77Cold()
    {
        clip.ClearCache();
        return clip.Encode(longPrompt);
    }

    /// <summary>T5, a typical prompt, padded to 512; warm cache.</summary>
    [Benchmark]
    public int[] T5Short512() => t5.Encode(ShortPrompt);

    /// <summary>T5, a long prompt truncated to 512; warm cache.</summary>
    [Benchmark]
    public int[] T5Long512() => t5.Encode(longPrompt);

    /// <summary>T5, a long prompt truncated to 512, every word segmented afresh (Viterbi).</summary>
    [Benchmark]
    public int[] T5Long512Cold()
    {
        t5.ClearCache();
        return t5.Encode(longPrompt);
    }

    private static string RepoRoot()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "FluxNative.sln")))
            {
                return directory.FullName;
            }
        }

        throw new InvalidOperationException($"No FluxNative.sln above {AppContext.BaseDirectory}.");
    }
}
