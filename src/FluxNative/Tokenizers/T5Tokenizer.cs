using System.Buffers;
using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace FluxNative.Tokenizers;

/// <summary>How a Metaspace pre-tokenizer puts the <c>▁</c> word marker in front of a section of text.</summary>
public enum MetaspacePrependScheme
{
    /// <summary>Before every section that does not start with one (FLUX's legacy T5 setup).</summary>
    Always,

    /// <summary>Only before the first section of the text (transformers' <c>legacy: false</c>).</summary>
    First,

    /// <summary>Never.</summary>
    Never,
}

/// <summary>
/// The T5 v1.1 SentencePiece Unigram tokenizer of FLUX.1's <c>tokenizer_2/</c> folder (docs/flux-model.md §3.1), loaded from
/// <c>tokenizer.json</c> (or, without one, from <c>spiece.model</c>). It reproduces transformers'
/// <c>T5TokenizerFast</c>, which is what diffusers' FLUX pipelines run; for ordinary prompts BFL's slow
/// <c>T5Tokenizer</c> (raw SentencePiece) gives the same ids. See <c>src/FluxNative/Tokenizers/README.md</c> for where
/// they differ.
/// </summary>
/// <remarks>
/// <para>The steps, in order (tokenizers' pipeline for FLUX's tokenizer.json):</para>
/// <list type="number">
/// <item>Special tokens (<c>&lt;pad&gt;</c>, <c>&lt;/s&gt;</c>, <c>&lt;unk&gt;</c>, <c>&lt;extra_id_0..99&gt;</c>) are split out of the raw
/// text, leftmost-longest; each other section is normalised and segmented on its own.</item>
/// <item>The precompiled <c>nmt_nfkc</c> charsmap (NFKC plus SentencePiece's extras: control characters removed, most
/// whitespace and zero-width characters mapped to a space), per grapheme cluster; then trailing whitespace is stripped
/// and every run of two or more spaces becomes one <c>▁</c>.</item>
/// <item>Metaspace: spaces become <c>▁</c>, a <c>▁</c> is prepended, and the text is split in front of every <c>▁</c>.</item>
/// <item>Unigram: for each word, the Viterbi path over the piece log-probabilities (double precision; ties go to the
/// earlier-starting piece); characters no piece covers become <c>&lt;unk&gt;</c> (2) with score min − 10, and runs of
/// them are fused into one.</item>
/// <item><c>&lt;/s&gt;</c> (1) is appended; truncation keeps the first <c>maxLength − 1</c> pieces and the <c>&lt;/s&gt;</c>;
/// padding with <c>&lt;pad&gt;</c> (0) on the right to exactly <c>maxLength</c>.</item>
/// </list>
/// <para>Immutable apart from a concurrent per-word cache: one instance can be used from any number of threads.</para>
/// </remarks>
public sealed class T5Tokenizer
{
    /// <summary>Text length for FLUX.1 [dev] (and diffusers' default for every FLUX model): 512 tokens.</summary>
    public const int DevMaxLength = 512;

    /// <summary>Text length BFL uses for FLUX.1 [schnell]: 256 tokens.</summary>
    public const int SchnellMaxLength = 256;

    /// <summary>The default of <see cref="Encode(string, int)"/>: <see cref="DevMaxLength"/>.</summary>
    public const int DefaultMaxLength = DevMaxLength;

    private const char Metaspace = '▁';

    /// <summary>The Replace pattern of SentencePiece conversions: runs of two or more spaces (become one ▁).</summary>
    private const string SpaceRun = " {2,}";
    private const int CacheLimit = 100_000;

    private readonly string[] pieces;
    private readonly double[] scores;
    private readonly Dictionary<string, int> pieceIds;
    private readonly PieceTrie trie;
    private readonly double unkScore;
    private readonly PrecompiledCharsmap? charsmap;
    private readonly bool stripLeft, stripRight;
    private readonly (string Pattern, Regex? Regex, string Content)[] replacements;
    private readonly MetaspacePrependScheme prependScheme;
    private readonly bool splitWords;
    private readonly AddedToken[] addedTokens;
    private readonly SearchValues<char> addedTokenStarts;
    private readonly int[] prefixIds, suffixIds;
    private readonly ConcurrentDictionary<string, int[]> cache = new(StringComparer.Ordinal);

    /// <summary>Entries added since the cache was last emptied (ConcurrentDictionary.Count takes every lock: too slow per call).</summary>
    private int cacheAdds;

    private T5Tokenizer(Definition definition)
    {
        pieces = definition.Pieces;
        scores = definition.Scores;
        pieceIds = new Dictionary<string, int>(pieces.Length, StringComparer.Ordinal);
        for (int i = 0; i < pieces.Length; i++)
        {
            pieceIds[pieces[i]] = i; // a repeated piece maps to its last id, as in tokenizers
        }

        trie = new PieceTrie(pieces);
        unkScore = scores.Min() - 10.0;
        UnknownId = definition.UnknownId;
        charsmap = definition.Charsmap;
        stripLeft = definition.StripLeft;
        stripRight = definition.StripRight;
        replacements = [.. definition.Replacements];
        prependScheme = definition.PrependScheme;
        splitWords = definition.SplitWords;
        addedTokens = [.. definition.AddedTokens.OrderByDescending(t => t.Content.Length)];
        addedTokenStarts = SearchValues.Create([.. addedTokens.Select(t => t.Content[0]).Distinct()]);
        prefixIds = definition.PrefixIds;
        suffixIds = definition.SuffixIds;
        EosId = definition.EosId;
        PadId = definition.PadId;
    }

    /// <summary>Id of <c>&lt;/s&gt;</c>, appended to every sequence (1).</summary>
    public int EosId { get; }

    /// <summary>Id of <c>&lt;pad&gt;</c>, used for padding (0).</summary>
    public int PadId { get; }

    /// <summary>Id of <c>&lt;unk&gt;</c> (2).</summary>
    public int UnknownId { get; }

    /// <summary>Number of pieces in the model, the 100 <c>&lt;extra_id_N&gt;</c> sentinels included (32100).</summary>
    public int VocabularySize => pieces.Length;

    /// <summary>
    /// Loads the tokenizer from a folder (a FLUX model's <c>tokenizer_2/</c>): its <c>tokenizer.json</c> when there is
    /// one, otherwise its <c>spiece.model</c>, converted as transformers' T5Converter does (the <c>extra_ids</c> count
    /// and the <c>legacy</c> flag are read from <c>tokenizer_config.json</c> when present).
    /// </summary>
    /// <param name="directory">The tokenizer folder.</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">Neither tokenizer.json nor spiece.model is there.</exception>
    /// <exception cref="InvalidDataException">The file is not a T5 Unigram tokenizer; the message names it.</exception>
    public static T5Tokenizer FromDirectory(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (!Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException($"T5 tokenizer folder not found: {directory}");
        }

        string json = Path.Combine(directory, "tokenizer.json");
        if (File.Exists(json))
        {
            return FromTokenizerJson(json);
        }

        string model = Path.Combine(directory, "spiece.model");
        if (!File.Exists(model))
        {
            throw new FileNotFoundException($"T5 tokenizer: neither tokenizer.json nor spiece.model in {directory}", json);
        }

        int extraIds = 100;
        var scheme = MetaspacePrependScheme.Always;
        string config = Path.Combine(directory, "tokenizer_config.json");
        if (File.Exists(config))
        {
            using JsonDocument document = ParseJson(config);
            if (document.RootElement.TryGetProperty("extra_ids", out JsonElement extra) && extra.TryGetInt32(out int count) && count >= 0)
            {
                extraIds = count;
            }

            if (document.RootElement.TryGetProperty("legacy", out JsonElement legacy) && legacy.ValueKind == JsonValueKind.False)
            {
                scheme = MetaspacePrependScheme.First;
            }
        }

        return FromSentencePieceModel(model, extraIds, scheme);
    }

    /// <summary>Loads a Hugging Face <c>tokenizer.json</c> with a Unigram model (FLUX's <c>tokenizer_2/tokenizer.json</c>).</summary>
    /// <param name="path">The tokenizer.json file.</param>
    /// <exception cref="FileNotFoundException">The file is missing.</exception>
    /// <exception cref="InvalidDataException">The file is not a supported Unigram tokenizer; the message names it.</exception>
    public static T5Tokenizer FromTokenizerJson(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"tokenizer.json not found: {path}", path);
        }

        using JsonDocument document = ParseJson(path);
        try
        {
            return new T5Tokenizer(Definition.FromTokenizerJson(document.RootElement, path));
        }
        catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or FormatException or ArgumentException)
        {
            throw new InvalidDataException($"{path}: not a supported Unigram tokenizer.json: {e.Message}", e);
        }
    }

    /// <summary>
    /// Loads a SentencePiece Unigram <c>.model</c> file (T5's <c>spiece.model</c>) and builds what transformers'
    /// T5Converter builds from it: the pieces plus <paramref name="extraIds"/> sentinels <c>&lt;extra_id_{N-1}&gt;</c> ..
    /// <c>&lt;extra_id_0&gt;</c> (score 0), the model's charsmap, Strip(right), Replace(" {2,}" → "▁"), Metaspace and
    /// <c>$A &lt;/s&gt;</c>.
    /// </summary>
    /// <param name="path">The .model file.</param>
    /// <param name="extraIds">Number of sentinel tokens appended to the vocabulary (T5: 100).</param>
    /// <param name="prependScheme">Metaspace prepend scheme; FLUX's configuration (<c>legacy: true</c>) means <see cref="MetaspacePrependScheme.Always"/>.</param>
    /// <exception cref="FileNotFoundException">The file is missing.</exception>
    /// <exception cref="InvalidDataException">The file is not a Unigram SentencePiece model; the message names it.</exception>
    public static T5Tokenizer FromSentencePieceModel(string path, int extraIds = 100, MetaspacePrependScheme prependScheme = MetaspacePrependScheme.Always)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentOutOfRangeException.ThrowIfNegative(extraIds);
        return new T5Tokenizer(Definition.FromSentencePiece(SentencePieceModel.Read(path), extraIds, prependScheme, path));
    }

    /// <summary>
    /// Tokenizes <paramref name="text"/> as the FLUX pipelines do: the piece ids, truncated to
    /// <c><paramref name="maxLength"/> − 1</c>, then <c>&lt;/s&gt;</c>, then <c>&lt;pad&gt;</c> up to exactly
    /// <paramref name="maxLength"/>.
    /// </summary>
    /// <param name="text">The prompt.</param>
    /// <param name="maxLength">The output length: 512 for [dev] (<see cref="DevMaxLength"/>), 256 for [schnell] in BFL (<see cref="SchnellMaxLength"/>).</param>
    public int[] Encode(string text, int maxLength = DefaultMaxLength)
    {
        ArgumentNullException.ThrowIfNull(text);
        int specials = prefixIds.Length + suffixIds.Length;
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLength, Math.Max(1, specials));
        int limit = maxLength - specials;
        var ids = new List<int>(maxLength);
        AppendIds(text, ids, limit);
        int count = Math.Min(ids.Count, limit);
        var result = new int[maxLength];
        prefixIds.CopyTo(result, 0);
        ids.CopyTo(0, result, prefixIds.Length, count);
        suffixIds.CopyTo(result, prefixIds.Length + count);
        result.AsSpan(specials + count).Fill(PadId);
        return result;
    }

    /// <summary>Encodes every text with <see cref="Encode(string, int)"/>: one row of <paramref name="maxLength"/> ids per text.</summary>
    /// <param name="texts">The prompts.</param>
    /// <param name="maxLength">The row length.</param>
    public int[][] EncodeBatch(IReadOnlyList<string> texts, int maxLength = DefaultMaxLength)
    {
        ArgumentNullException.ThrowIfNull(texts);
        var rows = new int[texts.Count][];
        for (int i = 0; i < rows.Length; i++)
        {
            rows[i] = Encode(texts[i], maxLength);
        }

        return rows;
    }

    /// <summary>Caches a result; past <see cref="CacheLimit"/> additions the cache starts again empty, so a stream of unique words cannot grow memory without bound.</summary>
    private void AddToCache(string key, int[] ids)
    {
        if (Interlocked.Increment(ref cacheAdds) > CacheLimit)
        {
            ClearCache();
        }

        cache.TryAdd(key, ids);
    }

    /// <summary>
    /// Empties the per-word cache (it also empties itself past 100 000 entries). Results do not change; only the
    /// next calls are slower. For benchmarks and for long-running processes that want the memory back.
    /// </summary>
    public void ClearCache()
    {
        cache.Clear();
        Volatile.Write(ref cacheAdds, 0);
    }

    /// <summary>The ids <see cref="Encode(string, int)"/> adds around the text's own (<c>&lt;/s&gt;</c>: 1 for T5).</summary>
    public int SpecialTokenCount => prefixIds.Length + suffixIds.Length;

    /// <summary>The piece ids of <paramref name="text"/> without <c>&lt;/s&gt;</c>, truncation or padding.</summary>
    /// <param name="text">The text to tokenize.</param>
    public int[] Tokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        AppendIds(text, ids, int.MaxValue);
        return [.. ids];
    }

    /// <summary>The piece string of <paramref name="id"/> (for diagnostics).</summary>
    /// <param name="id">A piece id, 0 to <see cref="VocabularySize"/> − 1.</param>
    public string GetPiece(int id)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(id);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(id, pieces.Length);
        return pieces[id];
    }

    private void AppendIds(string text, List<int> ids, int limit)
    {
        int start = 0; // start of the current text section
        int skipLeading = 0;
        int index = 0;
        while (index <= text.Length && ids.Count < limit)
        {
            AddedToken? match = index < text.Length ? MatchAddedToken(text, index) : null;
            if (match is null && index < text.Length)
            {
                int next = text.AsSpan(index + 1).IndexOfAny(addedTokenStarts);
                index = next < 0 ? text.Length : index + 1 + next;
                continue;
            }

            int end = index;
            if (match is { LeftStrip: true })
            {
                while (end > start && char.IsWhiteSpace(text[end - 1]))
                {
                    end--;
                }
            }

            if (end > start + skipLeading)
            {
                AppendSection(text.AsSpan(start + skipLeading, end - start - skipLeading), start + skipLeading == 0, ids, limit);
            }

            if (match is null)
            {
                break;
            }

            ids.Add(match.Id);
            index += match.Content.Length;
            start = index;
            skipLeading = 0;
            if (match.RightStrip)
            {
                while (start + skipLeading < text.Length && char.IsWhiteSpace(text[start + skipLeading]))
                {
                    skipLeading++;
                }
            }
        }

        if (ids.Count > limit)
        {
            ids.RemoveRange(limit, ids.Count - limit);
        }
    }

    /// <summary>
    /// The special token (if any) starting at <paramref name="index"/>, matched on the raw text. Raw SentencePiece (and so
    /// BFL's T5Tokenizer for the text itself) has no such step: it segments "&lt;/s&gt;" in a prompt as the pieces "&lt;/", "s", "&gt;".
    /// </summary>
    private AddedToken? MatchAddedToken(string text, int index)
    {
        foreach (AddedToken token in addedTokens)
        {
            if (text[index] == token.Content[0] && text.AsSpan(index).StartsWith(token.Content, StringComparison.Ordinal))
            {
                return token; // longest first: leftmost-longest
            }
        }

        return null;
    }

    private void AppendSection(ReadOnlySpan<char> section, bool atTextStart, List<int> ids, int limit)
    {
        string text = section.ToString();
        if (charsmap is not null)
        {
            text = charsmap.Normalize(text);
        }

        if (stripLeft || stripRight)
        {
            ReadOnlySpan<char> span = text;
            span = stripLeft ? span.TrimStart() : span;
            span = stripRight ? span.TrimEnd() : span;
            if (span.Length != text.Length)
            {
                text = span.ToString();
            }
        }

        foreach ((string pattern, Regex? regex, string content) in replacements)
        {
            if (regex is null)
            {
                text = text.Replace(pattern, content, StringComparison.Ordinal);
            }
            else if (pattern != SpaceRun || text.Contains("  ", StringComparison.Ordinal))
            {
                text = regex.Replace(text, content);
            }
        }

        if (text.Length == 0)
        {
            return;
        }

        text = text.Replace(' ', Metaspace);
        bool prepend = prependScheme == MetaspacePrependScheme.Always || (prependScheme == MetaspacePrependScheme.First && atTextStart);
        if (prepend && text[0] != Metaspace)
        {
            text = Metaspace + text;
        }

        if (!splitWords)
        {
            AppendWord(text, ids);
            return;
        }

        int wordStart = 0;
        for (int i = 1; i <= text.Length; i++)
        {
            if (i == text.Length || text[i] == Metaspace)
            {
                if (ids.Count >= limit)
                {
                    return;
                }

                AppendWord(text[wordStart..i], ids);
                wordStart = i;
            }
        }
    }

    private void AppendWord(string word, List<int> ids)
    {
        if (!cache.TryGetValue(word, out int[]? wordIds))
        {
            wordIds = Viterbi(word);
            AddToCache(word, wordIds);
        }

        ids.AddRange(wordIds);
    }

    /// <summary>
    /// tokenizers' <c>encode_optimized</c>: best path ending at each position, then backtracking with unknown runs fused.
    /// Differences from raw SentencePiece: scores are summed in double (SentencePiece: float), which could only matter for
    /// exact ties; and the trie holds every vocabulary entry, CONTROL pieces such as "&lt;/s&gt;" and the sentinels included,
    /// so text that becomes "&lt;/s&gt;" only after NFKC ("＜／ｓ＞") is matched as id 1, where SentencePiece never matches it.
    /// </summary>
    private int[] Viterbi(string word)
    {
        int n = word.Length;
        Span<double> bestScore = n < 128 ? stackalloc double[n + 1] : new double[n + 1];
        Span<int> startsAt = n < 128 ? stackalloc int[n + 1] : new int[n + 1];
        Span<int> nodeIds = n < 128 ? stackalloc int[n + 1] : new int[n + 1];
        bestScore.Clear();
        startsAt.Fill(-1);

        int start = 0;
        while (start < n)
        {
            int charLength = char.IsHighSurrogate(word[start]) && start + 1 < n && char.IsLowSurrogate(word[start + 1]) ? 2 : 1;
            double scoreHere = bestScore[start];
            bool hasSingle = false;
            int node = PieceTrie.Root;
            for (int end = start; end < n; end++)
            {
                node = trie.Child(node, word[end]);
                if (node < 0)
                {
                    break;
                }

                int id = trie.PieceId(node);
                if (id < 0)
                {
                    continue;
                }

                int target = end + 1;
                double candidate = scores[id] + scoreHere;
                if (startsAt[target] < 0 || candidate > bestScore[target])
                {
                    bestScore[target] = candidate;
                    startsAt[target] = start;
                    nodeIds[target] = id;
                }

                hasSingle |= target - start == charLength;
            }

            if (!hasSingle)
            {
                int target = start + charLength;
                double candidate = unkScore + scoreHere;
                if (startsAt[target] < 0 || candidate > bestScore[target])
                {
                    bestScore[target] = candidate;
                    startsAt[target] = start;
                    nodeIds[target] = UnknownId;
                }
            }

            start += charLength;
        }

        var reversed = new List<int>(n);
        int position = n;
        int unknownEnd = -1;
        while (position > 0)
        {
            int from = startsAt[position];
            if (nodeIds[position] == UnknownId)
            {
                if (unknownEnd < 0)
                {
                    unknownEnd = position;
                }
            }
            else
            {
                if (unknownEnd >= 0)
                {
                    reversed.Add(FusedUnknown(word, position, unknownEnd));
                    unknownEnd = -1;
                }

                reversed.Add(nodeIds[position]);
            }

            position = from;
        }

        if (unknownEnd >= 0)
        {
            reversed.Add(FusedUnknown(word, 0, unknownEnd));
        }

        reversed.Reverse();
        return [.. reversed];
    }

    /// <summary>tokenizers turns a run of unknown nodes into one token string and looks it up; it is almost never a piece.</summary>
    private int FusedUnknown(string word, int start, int end) =>
        pieceIds.TryGetValue(word[start..end], out int id) ? id : UnknownId;

    private static JsonDocument ParseJson(string path)
    {
        try
        {
            using FileStream stream = File.OpenRead(path);
            return JsonDocument.Parse(stream);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>A special token split out of the raw text before normalisation.</summary>
    private sealed record AddedToken(string Content, int Id, bool LeftStrip, bool RightStrip);

    /// <summary>Everything the constructor needs, from either file format.</summary>
    private sealed class Definition
    {
        public required string[] Pieces { get; init; }

        public required double[] Scores { get; init; }

        public required int UnknownId { get; init; }

        public PrecompiledCharsmap? Charsmap { get; set; }

        public bool StripLeft { get; set; }

        public bool StripRight { get; set; }

        public List<(string Pattern, Regex? Regex, string Content)> Replacements { get; } = [];

        public MetaspacePrependScheme PrependScheme { get; set; } = MetaspacePrependScheme.Always;

        public bool SplitWords { get; set; } = true;

        public List<AddedToken> AddedTokens { get; } = [];

        public int[] PrefixIds { get; set; } = [];

        public int[] SuffixIds { get; set; } = [];

        public int EosId { get; set; }

        public int PadId { get; set; }

        public static Definition FromTokenizerJson(JsonElement root, string path)
        {
            JsonElement model = root.GetProperty("model");
            string type = model.GetProperty("type").GetString() ?? string.Empty;
            if (type != "Unigram")
            {
                throw new InvalidDataException($"{path}: model type \"{type}\" is not Unigram; not a T5 tokenizer.");
            }

            if (model.TryGetProperty("byte_fallback", out JsonElement fallback) && fallback.ValueKind == JsonValueKind.True)
            {
                throw new InvalidDataException($"{path}: Unigram byte_fallback is not supported (T5 does not use it).");
            }

            JsonElement vocab = model.GetProperty("vocab");
            int count = vocab.GetArrayLength();
            var pieceList = new string[count];
            var scoreList = new double[count];
            int i = 0;
            foreach (JsonElement entry in vocab.EnumerateArray())
            {
                pieceList[i] = entry[0].GetString() ?? throw new InvalidDataException($"{path}: vocab entry {i} has no piece.");
                scoreList[i] = entry[1].GetDouble();
                i++;
            }

            int unk = model.TryGetProperty("unk_id", out JsonElement unkId) && unkId.ValueKind == JsonValueKind.Number ? unkId.GetInt32()
                : throw new InvalidDataException($"{path}: the Unigram model has no unk_id.");
            if (count == 0 || unk < 0 || unk >= count)
            {
                throw new InvalidDataException($"{path}: unk_id {unk} is outside the {count}-piece vocabulary.");
            }

            var definition = new Definition { Pieces = pieceList, Scores = scoreList, UnknownId = unk };
            if (root.TryGetProperty("normalizer", out JsonElement normalizer) && normalizer.ValueKind == JsonValueKind.Object)
            {
                definition.AddNormalizer(normalizer, path);
            }

            if (root.TryGetProperty("pre_tokenizer", out JsonElement preTokenizer) && preTokenizer.ValueKind == JsonValueKind.Object)
            {
                definition.SetPreTokenizer(preTokenizer, path);
            }
            else
            {
                throw new InvalidDataException($"{path}: no pre_tokenizer; a T5 tokenizer.json has a Metaspace one.");
            }

            if (root.TryGetProperty("added_tokens", out JsonElement added) && added.ValueKind == JsonValueKind.Array)
            {
                foreach (JsonElement token in added.EnumerateArray())
                {
                    string content = token.GetProperty("content").GetString() ?? string.Empty;
                    if (content.Length > 0)
                    {
                        definition.AddedTokens.Add(new AddedToken(content, token.GetProperty("id").GetInt32(),
                            Flag(token, "lstrip"), Flag(token, "rstrip")));
                    }
                }
            }

            var ids = new Dictionary<string, int>(StringComparer.Ordinal);
            for (int p = 0; p < pieceList.Length; p++)
            {
                ids[pieceList[p]] = p;
            }

            foreach (AddedToken token in definition.AddedTokens)
            {
                ids[token.Content] = token.Id;
            }

            definition.EosId = ids.TryGetValue("</s>", out int eos) ? eos : throw new InvalidDataException($"{path}: no </s> token.");
            definition.PadId = ids.TryGetValue("<pad>", out int pad) ? pad : throw new InvalidDataException($"{path}: no <pad> token.");
            if (root.TryGetProperty("post_processor", out JsonElement post) && post.ValueKind == JsonValueKind.Object)
            {
                definition.SetTemplate(post, ids, path);
            }

            return definition;
        }

        public static Definition FromSentencePiece(SentencePieceModel model, int extraIds, MetaspacePrependScheme scheme, string path)
        {
            int count = model.Pieces.Count + extraIds;
            var pieceList = new string[count];
            var scoreList = new double[count];
            int unk = -1;
            for (int i = 0; i < model.Pieces.Count; i++)
            {
                (pieceList[i], float score, SentencePieceModel.PieceType type) = model.Pieces[i];
                scoreList[i] = score;
                if (type == SentencePieceModel.PieceType.Unknown && unk < 0)
                {
                    unk = i;
                }
            }

            if (unk < 0)
            {
                throw new InvalidDataException($"{path}: the SentencePiece model has no unknown piece.");
            }

            for (int e = 0; e < extraIds; e++)
            {
                pieceList[model.Pieces.Count + e] = $"<extra_id_{extraIds - 1 - e}>";
            }

            var definition = new Definition
            {
                Pieces = pieceList,
                Scores = scoreList,
                UnknownId = unk,
                Charsmap = model.PrecompiledCharsmap.Length > 0 ? new PrecompiledCharsmap(model.PrecompiledCharsmap, path) : null,
                StripRight = true,
                PrependScheme = model.AddDummyPrefix ? scheme : MetaspacePrependScheme.Never,
            };
            definition.Replacements.Add((SpaceRun, new Regex(SpaceRun, RegexOptions.CultureInvariant), "▁"));
            for (int i = 0; i < count; i++)
            {
                bool special = i >= model.Pieces.Count || model.Pieces[i].Type is SentencePieceModel.PieceType.Control
                    or SentencePieceModel.PieceType.Unknown or SentencePieceModel.PieceType.UserDefined;
                if (special)
                {
                    definition.AddedTokens.Add(new AddedToken(pieceList[i], i, false, false));
                }
            }

            int eos = Array.IndexOf(pieceList, "</s>");
            int pad = Array.IndexOf(pieceList, "<pad>");
            if (eos < 0 || pad < 0)
            {
                throw new InvalidDataException($"{path}: the SentencePiece model has no </s> or <pad> piece.");
            }

            definition.EosId = eos;
            definition.PadId = pad;
            definition.SuffixIds = [eos];
            return definition;
        }

        private void AddNormalizer(JsonElement normalizer, string path)
        {
            string type = normalizer.GetProperty("type").GetString() ?? string.Empty;
            switch (type)
            {
                case "Sequence":
                    foreach (JsonElement inner in normalizer.GetProperty("normalizers").EnumerateArray())
                    {
                        AddNormalizer(inner, path);
                    }

                    break;
                case "Precompiled":
                    if (Charsmap is not null || Replacements.Count > 0 || StripLeft || StripRight)
                    {
                        throw new InvalidDataException($"{path}: only a normaliser that starts with Precompiled is supported.");
                    }

                    string? base64 = normalizer.GetProperty("precompiled_charsmap").GetString();
                    if (!string.IsNullOrEmpty(base64))
                    {
                        Charsmap = new PrecompiledCharsmap(Convert.FromBase64String(base64), path);
                    }

                    break;
                case "Strip":
                    if (Replacements.Count > 0)
                    {
                        throw new InvalidDataException($"{path}: Strip after Replace is not supported.");
                    }

                    StripLeft |= Flag(normalizer, "strip_left");
                    StripRight |= Flag(normalizer, "strip_right");
                    break;
                case "Replace":
                    JsonElement pattern = normalizer.GetProperty("pattern");
                    string content = normalizer.GetProperty("content").GetString() ?? string.Empty;
                    if (pattern.TryGetProperty("String", out JsonElement literal))
                    {
                        Replacements.Add((literal.GetString() ?? string.Empty, null, content));
                    }
                    else
                    {
                        string expression = pattern.GetProperty("Regex").GetString() ?? string.Empty;
                        Replacements.Add((expression, new Regex(expression, RegexOptions.CultureInvariant), content));
                    }

                    break;
                default:
                    throw new InvalidDataException($"{path}: normaliser \"{type}\" is not supported (a T5 tokenizer uses Precompiled, Strip and Replace).");
            }
        }

        private void SetPreTokenizer(JsonElement preTokenizer, string path)
        {
            string type = preTokenizer.GetProperty("type").GetString() ?? string.Empty;
            if (type == "Sequence")
            {
                JsonElement list = preTokenizer.GetProperty("pretokenizers");
                if (list.GetArrayLength() != 1)
                {
                    throw new InvalidDataException($"{path}: only a single Metaspace pre-tokenizer is supported.");
                }

                SetPreTokenizer(list[0], path);
                return;
            }

            if (type != "Metaspace")
            {
                throw new InvalidDataException($"{path}: pre-tokenizer \"{type}\" is not supported (a T5 tokenizer uses Metaspace).");
            }

            string replacement = preTokenizer.TryGetProperty("replacement", out JsonElement r) ? r.GetString() ?? string.Empty : "▁";
            if (replacement != "▁")
            {
                throw new InvalidDataException($"{path}: Metaspace replacement \"{replacement}\" is not supported (only ▁).");
            }

            if (preTokenizer.TryGetProperty("prepend_scheme", out JsonElement scheme))
            {
                PrependScheme = scheme.GetString() switch
                {
                    "always" => MetaspacePrependScheme.Always,
                    "first" => MetaspacePrependScheme.First,
                    "never" => MetaspacePrependScheme.Never,
                    string other => throw new InvalidDataException($"{path}: Metaspace prepend_scheme \"{other}\" is unknown."),
                    null => MetaspacePrependScheme.Always,
                };
            }
            else if (preTokenizer.TryGetProperty("add_prefix_space", out JsonElement prefix))
            {
                PrependScheme = prefix.ValueKind == JsonValueKind.False ? MetaspacePrependScheme.Never : MetaspacePrependScheme.Always;
            }

            SplitWords = !preTokenizer.TryGetProperty("split", out JsonElement split) || split.ValueKind != JsonValueKind.False;
        }

        private void SetTemplate(JsonElement post, Dictionary<string, int> ids, string path)
        {
            string type = post.GetProperty("type").GetString() ?? string.Empty;
            if (type != "TemplateProcessing")
            {
                throw new InvalidDataException($"{path}: post-processor \"{type}\" is not supported (a T5 tokenizer uses TemplateProcessing).");
            }

            var prefix = new List<int>();
            var suffix = new List<int>();
            bool seenSequence = false;
            foreach (JsonElement item in post.GetProperty("single").EnumerateArray())
            {
                if (item.TryGetProperty("Sequence", out _))
                {
                    seenSequence = true;
                }
                else if (item.TryGetProperty("SpecialToken", out JsonElement special))
                {
                    string name = special.GetProperty("id").GetString() ?? string.Empty;
                    int id = post.TryGetProperty("special_tokens", out JsonElement map) && map.TryGetProperty(name, out JsonElement entry)
                        ? entry.GetProperty("ids")[0].GetInt32()
                        : ids.TryGetValue(name, out int known) ? known : throw new InvalidDataException($"{path}: template token \"{name}\" is unknown.");
                    (seenSequence ? suffix : prefix).Add(id);
                }
            }

            PrefixIds = [.. prefix];
            SuffixIds = [.. suffix];
        }

        private static bool Flag(JsonElement element, string name) =>
            element.TryGetProperty(name, out JsonElement value) && value.ValueKind == JsonValueKind.True;
    }

    /// <summary>A character trie over the piece strings, children in sorted arrays (binary search per step).</summary>
    private sealed class PieceTrie
    {
        public const int Root = 0;

        private readonly int[] childStart;
        private readonly char[] childChars;
        private readonly int[] childNodes;
        private readonly int[] pieceIds;
        private readonly int[] rootChildren = new int[char.MaxValue + 1];

        public PieceTrie(string[] pieces)
        {
            var children = new List<SortedList<char, int>> { new() };
            var ids = new List<int> { -1 };
            for (int p = 0; p < pieces.Length; p++)
            {
                int node = Root;
                foreach (char c in pieces[p])
                {
                    if (!children[node].TryGetValue(c, out int next))
                    {
                        next = children.Count;
                        children[node].Add(c, next);
                        children.Add([]);
                        ids.Add(-1);
                    }

                    node = next;
                }

                if (pieces[p].Length > 0)
                {
                    ids[node] = p; // the last id of a repeated piece wins, like the piece-to-id map
                }
            }

            childStart = new int[children.Count + 1];
            int total = children.Sum(c => c.Count);
            childChars = new char[total];
            childNodes = new int[total];
            int offset = 0;
            for (int node = 0; node < children.Count; node++)
            {
                childStart[node] = offset;
                foreach ((char c, int next) in children[node])
                {
                    childChars[offset] = c;
                    childNodes[offset] = next;
                    offset++;
                }
            }

            childStart[children.Count] = offset;
            pieceIds = [.. ids];
            rootChildren.AsSpan().Fill(-1);
            foreach ((char c, int next) in children[Root])
            {
                rootChildren[c] = next;
            }
        }

        public int Child(int node, char c)
        {
            if (node == Root)
            {
                return rootChildren[c];
            }

            int index = Array.BinarySearch(childChars, childStart[node], childStart[node + 1] - childStart[node], c);
            return index >= 0 ? childNodes[index] : -1;
        }

        public int PieceId(int node) => pieceIds[node];
    }
}
