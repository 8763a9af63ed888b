using System.Diagnostics;
using FluxNative.Tokenizers;

namespace FluxNative;

/// <summary>Where the text side of a pipeline comes from: the two encoders and their tokenizers.</summary>
public sealed record PromptEncoderSources
{
    /// <summary>The CLIP text encoder folder (a diffusers <c>text_encoder/</c>).</summary>
    public required string Clip { get; init; }

    /// <summary>The CLIP tokenizer folder (<c>vocab.json</c>, <c>merges.txt</c>; a diffusers <c>tokenizer/</c>).</summary>
    public required string ClipTokenizer { get; init; }

    /// <summary>The T5 encoder folder (a diffusers <c>text_encoder_2/</c>, sharded with an index).</summary>
    public required string T5 { get; init; }

    /// <summary>The T5 tokenizer folder (<c>tokenizer.json</c> or <c>spiece.model</c>; a diffusers <c>tokenizer_2/</c>).</summary>
    public required string T5Tokenizer { get; init; }

    /// <summary>
    /// The parts of a diffusers model folder, with per-part overrides. A tokenizer not given is looked for in the
    /// encoder's own folder, then in the sibling <c>tokenizer/</c> (<c>tokenizer_2/</c> for T5) next to it.
    /// </summary>
    /// <returns>The sources, or null when no text encoder is given and the model folder has none.</returns>
    public static PromptEncoderSources? Resolve(string? modelDirectory, string? clip, string? t5, string? clipTokenizer = null, string? t5Tokenizer = null)
    {
        clip ??= Existing(modelDirectory, "text_encoder");
        t5 ??= Existing(modelDirectory, "text_encoder_2");
        if (clip is null && t5 is null)
        {
            return null;
        }

        if (clip is null || t5 is null)
        {
            throw new GenerationRequestException(clip is null ? "clip" : "t5", "FLUX needs both text encoders: give the CLIP and the T5 folder (or neither, and prompt embeddings).");
        }

        return new PromptEncoderSources
        {
            Clip = clip,
            T5 = t5,
            ClipTokenizer = clipTokenizer ?? FindTokenizer(clip, "tokenizer", "vocab.json"),
            T5Tokenizer = t5Tokenizer ?? FindTokenizer(t5, "tokenizer_2", "tokenizer.json", "spiece.model"),
        };
    }

    private static string? Existing(string? modelDirectory, string folder) =>
        modelDirectory is not null && Directory.Exists(Path.Combine(modelDirectory, folder)) ? Path.Combine(modelDirectory, folder) : null;

    private static string FindTokenizer(string encoder, string sibling, params string[] files)
    {
        string full = Path.GetFullPath(encoder);
        string[] candidates = [full, Path.Combine(Path.GetDirectoryName(full.TrimEnd(Path.DirectorySeparatorChar)) ?? full, sibling)];
        foreach (string candidate in candidates)
        {
            if (files.Any(file => File.Exists(Path.Combine(candidate, file))))
            {
                return candidate;
            }
        }

        throw new GenerationRequestException(sibling == "tokenizer" ? "clip_tokenizer" : "t5_tokenizer",
            $"No tokenizer for '{encoder}': looked for {string.Join(" or ", files)} in {string.Join(" and ", candidates)}.");
    }
}

/// <summary>
/// Prompt text to FLUX's two conditioning inputs (docs/flux-model.md §3): the CLIP tokenizer and text tower give the pooled
/// vector <c>y</c> [1, 768]; the T5 tokenizer (padded to <see cref="T5MaxLength"/>) and encoder give <c>txt</c>
/// [1, L, 4096]. Results are kept in a bounded least-recently-used cache keyed by the prompt (the encoders and the
/// T5 length are fixed per instance), so twenty variations of one prompt encode it once.
/// </summary>
public sealed class PromptEncoder : IDisposable
{
    private readonly ClipTokenizer clipTokenizer;
    private readonly T5Tokenizer t5Tokenizer;
    private readonly bool ownsEncoders;
    private readonly int capacity;
    private readonly Dictionary<string, LinkedListNode<(string Prompt, PromptEmbeddings Embeddings)>> cache = new(StringComparer.Ordinal);
    private readonly LinkedList<(string Prompt, PromptEmbeddings Embeddings)> recency = new();
    private readonly object gate = new();

    /// <summary>Builds an encoder from loaded parts.</summary>
    /// <param name="clipTokenizer">The CLIP tokenizer (77 tokens).</param>
    /// <param name="clip">The CLIP text encoder.</param>
    /// <param name="t5Tokenizer">The T5 tokenizer.</param>
    /// <param name="t5">The T5 encoder.</param>
    /// <param name="t5MaxLength">T5 tokens per prompt: 512 for [dev], 256 for [schnell] (BFL); it changes the image, as padding is not masked.</param>
    /// <param name="cacheCapacity">Prompts kept; 0 disables the cache.</param>
    /// <param name="ownsEncoders">Dispose the encoders with this object.</param>
    public PromptEncoder(ClipTokenizer clipTokenizer, TextEncoder clip, T5Tokenizer t5Tokenizer, TextEncoder t5, int t5MaxLength, int cacheCapacity = 64, bool ownsEncoders = true)
    {
        ArgumentNullException.ThrowIfNull(clipTokenizer);
        ArgumentNullException.ThrowIfNull(clip);
        ArgumentNullException.ThrowIfNull(t5Tokenizer);
        ArgumentNullException.ThrowIfNull(t5);
        ArgumentOutOfRangeException.ThrowIfLessThan(t5MaxLength, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(cacheCapacity);
        if (clip.Config.Kind != ModelKind.ClipText || t5.Config.Kind != ModelKind.T5Encoder)
        {
            throw new ArgumentException($"Expected a CLIP and a T5 encoder, got {clip.Config.Kind} and {t5.Config.Kind}.");
        }

        if (clipTokenizer.VocabularySize > clip.Config.VocabSize || t5Tokenizer.VocabularySize > t5.Config.VocabSize)
        {
            throw new ArgumentException(
                $"A tokenizer has more ids than its encoder: CLIP {clipTokenizer.VocabularySize} vs {clip.Config.VocabSize}, T5 {t5Tokenizer.VocabularySize} vs {t5.Config.VocabSize}.");
        }

        this.clipTokenizer = clipTokenizer;
        this.t5Tokenizer = t5Tokenizer;
        Clip = clip;
        T5 = t5;
        T5MaxLength = t5MaxLength;
        capacity = cacheCapacity;
        this.ownsEncoders = ownsEncoders;
    }

    /// <summary>The CLIP text encoder.</summary>
    public TextEncoder Clip { get; }

    /// <summary>The T5 encoder.</summary>
    public TextEncoder T5 { get; }

    /// <summary>T5 tokens per prompt.</summary>
    public int T5MaxLength { get; }

    /// <summary>Prompts answered from the cache.</summary>
    public int CacheHits { get; private set; }

    /// <summary>Prompts that ran the encoders.</summary>
    public int CacheMisses { get; private set; }

    /// <summary>Loads the tokenizers and both encoders.</summary>
    public static PromptEncoder Load(PromptEncoderSources sources, int t5MaxLength, FluxWeightFormat t5Weights = FluxWeightFormat.AsStored, int threads = 0, int cacheCapacity = 64, FluxDevice? device = null)
    {
        ArgumentNullException.ThrowIfNull(sources);
        ClipTokenizer clipTokenizer = ClipTokenizer.FromDirectory(sources.ClipTokenizer);
        T5Tokenizer t5Tokenizer = T5Tokenizer.FromDirectory(sources.T5Tokenizer);
        TextEncoder clip = TextEncoder.Load(sources.Clip, FluxWeightFormat.AsStored, threads, device, ModelKind.ClipText);
        try
        {
            TextEncoder t5 = TextEncoder.Load(sources.T5, t5Weights, threads, device, ModelKind.T5Encoder);
            try
            {
                return new PromptEncoder(clipTokenizer, clip, t5Tokenizer, t5, t5MaxLength, cacheCapacity);
            }
            catch
            {
                t5.Dispose();
                throw;
            }
        }
        catch
        {
            clip.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Says, one sentence per encoder, when <paramref name="prompt"/> is longer than the encoder reads: CLIP keeps 75 of
    /// its tokens (77 with BOS and EOS), T5 <see cref="T5MaxLength"/> − 1; the rest is cut off, as in diffusers, which
    /// warns the same way. Empty when the whole prompt is read.
    /// </summary>
    public IReadOnlyList<string> TruncationWarnings(string prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        string?[] warnings =
        [
            TruncationWarning("CLIP", clipTokenizer.Tokenize(prompt).Length, ClipTokenizer.DefaultMaxLength, clipTokenizer.SpecialTokenCount),
            TruncationWarning("T5", t5Tokenizer.Tokenize(prompt).Length, T5MaxLength, t5Tokenizer.SpecialTokenCount),
        ];
        return [.. warnings.OfType<string>()];
    }

    /// <summary>The sentence of <see cref="TruncationWarnings"/> for one encoder, or null when nothing is cut.</summary>
    /// <param name="encoder">The encoder's name, as the sentence gives it (CLIP, T5).</param>
    /// <param name="promptTokens">The prompt's own tokens (the tokenizer's <c>Tokenize</c>).</param>
    /// <param name="maxLength">The ids the encoder reads.</param>
    /// <param name="specialTokens">The ids the tokenizer adds around the prompt's (BOS, EOS).</param>
    public static string? TruncationWarning(string encoder, int promptTokens, int maxLength, int specialTokens)
    {
        int kept = Math.Max(0, maxLength - specialTokens);
        return promptTokens <= kept
            ? null
            : $"The prompt is {promptTokens} {encoder} tokens but {encoder} reads {maxLength}, {kept} of them the prompt's: the last {promptTokens - kept} are cut off.";
    }

    /// <summary>The embeddings of <paramref name="prompt"/>: <c>txt</c> [1, T5MaxLength, T5 width] and <c>y</c> [1, CLIP width].</summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired (nothing is cached then).</exception>
    public PromptEmbeddings Encode(string prompt, CancellationToken cancellationToken = default) => Encode(prompt, cancellationToken, out _);

    /// <summary>As <see cref="Encode(string, CancellationToken)"/>, also saying how long the tokenizers took (zero for a cached prompt).</summary>
    public PromptEmbeddings Encode(string prompt, CancellationToken cancellationToken, out TimeSpan tokenization)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        tokenization = TimeSpan.Zero;
        lock (gate)
        {
            if (cache.TryGetValue(prompt, out var node))
            {
                recency.Remove(node);
                recency.AddFirst(node);
                CacheHits++;
                return node.Value.Embeddings;
            }

            CacheMisses++;
        }

        long started = Stopwatch.GetTimestamp();
        int[] clipIds = clipTokenizer.Encode(prompt, ClipTokenizer.DefaultMaxLength);
        int[] t5Ids = t5Tokenizer.Encode(prompt, T5MaxLength);
        tokenization = Stopwatch.GetElapsedTime(started);
        float[] pooled = Clip.Encode(clipIds, 1, hidden: false, pooled: true, cancellationToken).Pooled!;
        float[] txt = T5.Encode(t5Ids, 1, hidden: true, pooled: false, cancellationToken).Hidden!;
        var embeddings = new PromptEmbeddings(txt, pooled, 1, t5Ids.Length);
        if (capacity > 0)
        {
            lock (gate)
            {
                if (!cache.ContainsKey(prompt))
                {
                    cache[prompt] = recency.AddFirst((prompt, embeddings));
                    while (cache.Count > capacity)
                    {
                        cache.Remove(recency.Last!.Value.Prompt);
                        recency.RemoveLast();
                    }
                }
            }
        }

        return embeddings;
    }

    /// <summary>Frees the encoders (when owned).</summary>
    public void Dispose()
    {
        if (ownsEncoders)
        {
            Clip.Dispose();
            T5.Dispose();
        }
    }
}
