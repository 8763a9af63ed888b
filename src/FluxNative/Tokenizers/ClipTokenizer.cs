using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace FluxNative.Tokenizers;

/// <summary>
/// The CLIP ViT-L/14 byte-level BPE tokenizer of FLUX.1's <c>tokenizer/</c> folder (docs/flux-model.md §3.1), loaded from
/// <c>vocab.json</c> + <c>merges.txt</c>. It reproduces what diffusers' FLUX pipelines run: transformers' slow
/// <c>CLIPTokenizer</c> as installed <b>without</b> ftfy, which falls back to BERT's BasicTokenizer for the text
/// clean-up. See <c>src/FluxNative/Tokenizers/README.md</c> for every place where OpenAI's original tokenizer
/// (ftfy + <c>html.unescape</c>) or transformers' <c>CLIPTokenizerFast</c> give other ids.
/// </summary>
/// <remarks>
/// <para>The steps, in order:</para>
/// <list type="number">
/// <item>The exact strings <c>&lt;|startoftext|&gt;</c> and <c>&lt;|endoftext|&gt;</c> are split out of the raw text as
/// special tokens (transformers' added-token trie); everything else is tokenized section by section.</item>
/// <item>Clean-up (BasicTokenizer): NUL, U+FFFD and every character of category C* except tab/LF/CR (controls, format
/// characters such as ZWJ, soft hyphen and BOM, private use, unassigned) are removed; tab/LF/CR and Zs become a space;
/// each CJK ideograph gets a space on both sides. HTML entities such as <c>&amp;amp;</c> stay text (no unescaping).</item>
/// <item>NFC, split on whitespace, Python <c>str.lower()</c> of each word (no accent stripping).</item>
/// <item>The CLIP regex <c>&lt;\|startoftext\|&gt;|&lt;\|endoftext\|&gt;|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c>
/// with IGNORECASE, matched on code points (a hand-written scanner, not .NET's UTF-16 regex).</item>
/// <item>Each match as UTF-8 bytes mapped to GPT-2's printable byte alphabet, <c>&lt;/w&gt;</c> on the last symbol, BPE merges
/// by rank (results cached per word).</item>
/// <item><c>&lt;|startoftext|&gt;</c> (49406) + ids + <c>&lt;|endoftext|&gt;</c> (49407), truncated to keep both, padded
/// with the pad token, which for this tokenizer is <c>&lt;|endoftext|&gt;</c> = 49407 too.</item>
/// </list>
/// <para>Instances are immutable apart from the BPE cache, which is a concurrent dictionary: one instance can be
/// used from any number of threads.</para>
/// </remarks>
public sealed class ClipTokenizer
{
    /// <summary>CLIP's context length: 77 tokens including BOS and EOS.</summary>
    public const int DefaultMaxLength = 77;

    /// <summary>transformers' CLIPTokenizer reads only this many merges: <c>49152 - 256 - 2</c> (all of them for CLIP ViT-L/14).</summary>
    public const int MaxMerges = 49152 - 256 - 2;

    private const string StartOfText = "<|startoftext|>";
    private const string EndOfText = "<|endoftext|>";
    private const string WordEnd = "</w>";
    private const int CacheLimit = 100_000;

    /// <summary>The regex's contraction alternatives, in the order they are tried.</summary>
    private static readonly string[] Contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];

    private readonly Dictionary<string, int> vocabulary;
    private readonly Dictionary<long, (int Rank, int Merged)> merges;
    private readonly int[] byteIds = new int[256];
    private readonly int[] byteEndIds = new int[256];
    private readonly ConcurrentDictionary<string, int[]> cache = new(StringComparer.Ordinal);

    /// <summary>Entries added since the cache was last emptied (ConcurrentDictionary.Count takes every lock: too slow per call).</summary>
    private int cacheAdds;

    private ClipTokenizer(Dictionary<string, int> vocabulary, Dictionary<long, (int Rank, int Merged)> merges, string vocabPath, int bos, int eos, int pad)
    {
        this.vocabulary = vocabulary;
        this.merges = merges;
        BosId = bos;
        EosId = eos;
        PadId = pad;
        char[] alphabet = ByteAlphabet();
        for (int b = 0; b < 256; b++)
        {
            byteIds[b] = Lookup(alphabet[b].ToString(), vocabPath);
            byteEndIds[b] = Lookup(alphabet[b] + WordEnd, vocabPath);
        }
    }

    /// <summary>Id of <c>&lt;|startoftext|&gt;</c> (49406 for CLIP ViT-L/14).</summary>
    public int BosId { get; }

    /// <summary>Id of <c>&lt;|endoftext|&gt;</c> (49407).</summary>
    public int EosId { get; }

    /// <summary>Id used for padding: the pad token of <c>special_tokens_map.json</c>, <c>&lt;|endoftext|&gt;</c> = 49407 for FLUX.</summary>
    public int PadId { get; }

    /// <summary>Number of entries in <c>vocab.json</c> (49408).</summary>
    public int VocabularySize => vocabulary.Count;

    /// <summary>
    /// Loads the tokenizer from a folder holding <c>vocab.json</c> and <c>merges.txt</c> (a FLUX model's
    /// <c>tokenizer/</c>). The pad token is read from <c>special_tokens_map.json</c> or <c>tokenizer_config.json</c>
    /// when present; it defaults to <c>&lt;|endoftext|&gt;</c>.
    /// </summary>
    /// <param name="directory">The tokenizer folder.</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">vocab.json or merges.txt is missing.</exception>
    /// <exception cref="InvalidDataException">A file is not what a CLIP tokenizer needs; the message names it.</exception>
    public static ClipTokenizer FromDirectory(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (!Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException($"CLIP tokenizer folder not found: {directory}");
        }

        string? pad = ReadPadToken(Path.Combine(directory, "special_tokens_map.json"))
            ?? ReadPadToken(Path.Combine(directory, "tokenizer_config.json"));
        return FromFiles(Path.Combine(directory, "vocab.json"), Path.Combine(directory, "merges.txt"), pad ?? EndOfText);
    }

    /// <summary>Loads the tokenizer from a <c>vocab.json</c> and a <c>merges.txt</c>.</summary>
    /// <param name="vocabPath">JSON object from token to id; must hold the 512 byte-level symbols (with and without <c>&lt;/w&gt;</c>) and both special tokens.</param>
    /// <param name="mergesPath">The BPE merges, one "left right" pair per line after a <c>#version</c> header.</param>
    /// <param name="padToken">The padding token; FLUX's is <c>&lt;|endoftext|&gt;</c>.</param>
    /// <exception cref="FileNotFoundException">A file is missing.</exception>
    /// <exception cref="InvalidDataException">A file is not what a CLIP tokenizer needs; the message names it.</exception>
    public static ClipTokenizer FromFiles(string vocabPath, string mergesPath, string padToken = EndOfText)
    {
        ArgumentException.ThrowIfNullOrEmpty(vocabPath);
        ArgumentException.ThrowIfNullOrEmpty(mergesPath);
        ArgumentException.ThrowIfNullOrEmpty(padToken);
        Dictionary<string, int> vocabulary = ReadVocabulary(vocabPath);
        int bos = Lookup(StartOfText, vocabPath, vocabulary);
        int eos = Lookup(EndOfText, vocabPath, vocabulary);
        int pad = Lookup(padToken, vocabPath, vocabulary);
        Dictionary<long, (int, int)> merges = ReadMerges(mergesPath, vocabulary);
        return new ClipTokenizer(vocabulary, merges, vocabPath, bos, eos, pad);
    }

    /// <summary>
    /// Tokenizes <paramref name="text"/> as the FLUX pipelines do: BOS, the ids, EOS, truncated to
    /// <paramref name="maxLength"/> (the content is cut so that BOS and EOS stay) and padded with <see cref="PadId"/>
    /// to exactly <paramref name="maxLength"/>.
    /// </summary>
    /// <param name="text">The prompt; any string (unpaired surrogates are dropped like other C* characters).</param>
    /// <param name="maxLength">The output length, 2 or more; CLIP's text encoder takes 77.</param>
    public int[] Encode(string text, int maxLength = DefaultMaxLength)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLength, 2);
        var ids = new List<int>(maxLength);
        AppendIds(text, ids, maxLength - 2);
        var result = new int[maxLength];
        result[0] = BosId;
        int count = Math.Min(ids.Count, maxLength - 2);
        ids.CopyTo(0, result, 1, count);
        result[count + 1] = EosId;
        result.AsSpan(count + 2).Fill(PadId);
        return result;
    }

    /// <summary>Encodes every text with <see cref="Encode(string, int)"/>: one row of <paramref name="maxLength"/> ids per text.</summary>
    /// <param name="texts">The prompts.</param>
    /// <param name="maxLength">The row length, 2 or more.</param>
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

    /// <summary>The ids <see cref="Encode(string, int)"/> adds around the text's own: BOS and EOS.</summary>
    public int SpecialTokenCount => 2;

    /// <summary>The ids of <paramref name="text"/> without BOS, EOS, truncation or padding.</summary>
    /// <param name="text">The text to tokenize.</param>
    public int[] Tokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        AppendIds(text, ids, int.MaxValue);
        return [.. ids];
    }

    /// <summary>Appends the ids of <paramref name="text"/>, stopping once <paramref name="limit"/> are there (the rest would be truncated).</summary>
    private void AppendIds(string text, List<int> ids, int limit)
    {
        // transformers splits the exact special-token strings out of the raw text first (case-sensitive). OpenAI's
        // tokenizer has no such step: there, only its regex's special alternatives (after lower-casing) produce them.
        int start = 0;
        while (start <= text.Length && ids.Count < limit)
        {
            int next = text.IndexOf("<|", start, StringComparison.Ordinal);
            while (next >= 0 && !text.AsSpan(next).StartsWith(StartOfText, StringComparison.Ordinal)
                && !text.AsSpan(next).StartsWith(EndOfText, StringComparison.Ordinal))
            {
                next = text.IndexOf("<|", next + 2, StringComparison.Ordinal);
            }

            int end = next < 0 ? text.Length : next;
            if (end > start)
            {
                AppendSection(text.AsSpan(start, end - start), ids, limit);
            }

            if (next < 0)
            {
                break;
            }

            bool bos = text.AsSpan(next).StartsWith(StartOfText, StringComparison.Ordinal);
            ids.Add(bos ? BosId : EosId);
            start = next + (bos ? StartOfText.Length : EndOfText.Length);
        }

        if (ids.Count > limit)
        {
            ids.RemoveRange(limit, ids.Count - limit);
        }
    }

    /// <summary>BasicTokenizer clean-up, CJK split, NFC, whitespace split and lower-casing, then the regex and BPE per word.</summary>
    /// <remarks>
    /// OpenAI's tokenizer differs here: it runs ftfy.fix_text and html.unescape twice instead (so "&amp;amp;" becomes "&amp;"
    /// there but stays five characters here), removes no control or format characters (ZWJ, soft hyphen, BOM, NUL
    /// are byte-encoded there, dropped here), does not split CJK ideographs into separate words, and only NFC-normalises
    /// through ftfy. CLIPTokenizerFast also keeps control/format characters and does not split CJK.
    /// </remarks>
    private void AppendSection(ReadOnlySpan<char> section, List<int> ids, int limit)
    {
        var cleaned = new StringBuilder(section.Length + 8);
        bool ascii = true;
        int index = 0;
        while (index < section.Length)
        {
            char c = section[index];
            if (c < 0x80)
            {
                index++;
                if (c is ' ' or '\t' or '\n' or '\r')
                {
                    cleaned.Append(' ');
                }
                else if (c >= 0x20 && c != 0x7F)
                {
                    cleaned.Append(c);
                }

                continue;
            }

            ascii = false;
            if (Rune.DecodeFromUtf16(section[index..], out Rune rune, out int length) != System.Buffers.OperationStatus.Done)
            {
                index += length; // an unpaired surrogate: category Cs, removed
                continue;
            }

            index += length;
            UnicodeCategory category = Rune.GetUnicodeCategory(rune);
            if (rune.Value == 0xFFFD || PythonText.IsOther(category))
            {
                continue;
            }

            if (category == UnicodeCategory.SpaceSeparator)
            {
                cleaned.Append(' ');
            }
            else if (IsCjk(rune.Value))
            {
                cleaned.Append(' ').Append(section.Slice(index - length, length)).Append(' ');
            }
            else
            {
                cleaned.Append(section.Slice(index - length, length));
            }
        }

        string normalized = cleaned.ToString();
        if (!ascii && !normalized.IsNormalized(NormalizationForm.FormC))
        {
            normalized = normalized.Normalize(NormalizationForm.FormC);
        }

        var lower = new StringBuilder(32);
        foreach (Range wordRange in SplitWhitespace(normalized))
        {
            if (ids.Count >= limit)
            {
                return;
            }

            lower.Clear();
            PythonText.AppendLower(normalized.AsSpan(wordRange), lower);
            AppendWord(lower.ToString(), ids);
        }
    }

    /// <summary>Python's <c>str.split()</c> after the clean-up: the only whitespace left is the space and U+2028/U+2029.</summary>
    private static List<Range> SplitWhitespace(string text)
    {
        var words = new List<Range>();
        int start = -1;
        for (int i = 0; i <= text.Length; i++)
        {
            bool space = i == text.Length || text[i] is ' ' or '\u2028' or '\u2029';
            if (space && start >= 0)
            {
                words.Add(new Range(start, i));
                start = -1;
            }
            else if (!space && start < 0)
            {
                start = i;
            }
        }

        return words;
    }

    /// <summary>The CLIP regex over one lower-cased word (no whitespace inside), with BPE on every match.</summary>
    private void AppendWord(string word, List<int> ids)
    {
        int index = 0;
        while (index < word.Length)
        {
            int length = MatchAt(word, index);
            string piece = word.Substring(index, length);
            index += length;
            if (piece == StartOfText)
            {
                ids.Add(BosId);
            }
            else if (piece == EndOfText)
            {
                ids.Add(EosId);
            }
            else
            {
                ids.AddRange(Bpe(piece));
            }
        }
    }

    /// <summary>
    /// Length in UTF-16 units of the regex match starting at <paramref name="index"/> (leftmost alternative wins, as in
    /// Python's regex). Letters and numbers are tested per code point: .NET's regex would see a supplementary-plane letter
    /// as two surrogates (category Cs) and put it in the punctuation run.
    /// </summary>
    private static int MatchAt(string word, int index)
    {
        ReadOnlySpan<char> rest = word.AsSpan(index);
        if (rest[0] == '<')
        {
            if (MatchesIgnoreCase(rest, StartOfText))
            {
                return StartOfText.Length;
            }

            if (MatchesIgnoreCase(rest, EndOfText))
            {
                return EndOfText.Length;
            }
        }
        else if (rest[0] == '\'')
        {
            foreach (string suffix in Contractions)
            {
                if (MatchesIgnoreCase(rest, suffix))
                {
                    return suffix.Length;
                }
            }
        }

        UnicodeCategory first = Category(rest, 0, out int firstLength);
        if (PythonText.IsLetter(first))
        {
            int length = firstLength;
            while (length < rest.Length && PythonText.IsLetter(Category(rest, length, out int next)))
            {
                length += next;
            }

            return length;
        }

        if (PythonText.IsNumber(first))
        {
            return firstLength;
        }

        int run = firstLength;
        while (run < rest.Length)
        {
            UnicodeCategory category = Category(rest, run, out int next);
            if (PythonText.IsLetter(category) || PythonText.IsNumber(category))
            {
                break;
            }

            run += next;
        }

        return run;
    }

    private static UnicodeCategory Category(ReadOnlySpan<char> text, int index, out int length)
    {
        char c = text[index];
        if (char.IsAscii(c))
        {
            length = 1;
            return char.IsAsciiLetter(c) ? UnicodeCategory.LowercaseLetter
                : char.IsAsciiDigit(c) ? UnicodeCategory.DecimalDigitNumber : UnicodeCategory.OtherPunctuation;
        }

        Rune.DecodeFromUtf16(text[index..], out Rune rune, out length);
        return Rune.GetUnicodeCategory(rune);
    }

    /// <summary>
    /// Case-insensitive match of an ASCII pattern as Python's <c>regex</c> does it (simple case folding): the text is
    /// already lower-cased, so the only other character that can match is ſ (U+017F), which folds to s.
    /// </summary>
    private static bool MatchesIgnoreCase(ReadOnlySpan<char> text, string pattern)
    {
        if (text.Length < pattern.Length)
        {
            return false;
        }

        for (int i = 0; i < pattern.Length; i++)
        {
            char c = text[i], p = pattern[i];
            if (c != p && char.ToLowerInvariant(c) != p && !(p == 's' && c == '\u017F'))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Byte-level BPE of one regex match, with the result cached per match.</summary>
    private int[] Bpe(string piece)
    {
        if (cache.TryGetValue(piece, out int[]? cached))
        {
            return cached;
        }

        int byteCount = Encoding.UTF8.GetByteCount(piece);
        Span<byte> bytes = byteCount <= 256 ? stackalloc byte[byteCount] : new byte[byteCount];
        Encoding.UTF8.GetBytes(piece, bytes);
        var symbols = new List<int>(byteCount);
        for (int i = 0; i < byteCount - 1; i++)
        {
            symbols.Add(byteIds[bytes[i]]);
        }

        symbols.Add(byteEndIds[bytes[byteCount - 1]]);

        while (symbols.Count > 1)
        {
            int bestRank = int.MaxValue, bestMerged = -1;
            long bestPair = 0;
            for (int i = 0; i < symbols.Count - 1; i++)
            {
                long pair = Pair(symbols[i], symbols[i + 1]);
                if (merges.TryGetValue(pair, out var merge) && merge.Rank < bestRank)
                {
                    bestRank = merge.Rank;
                    bestMerged = merge.Merged;
                    bestPair = pair;
                }
            }

            if (bestMerged < 0)
            {
                break;
            }

            // Merge every occurrence, left to right and without overlaps (as transformers' loop does).
            int write = 0;
            for (int read = 0; read < symbols.Count; read++)
            {
                if (read < symbols.Count - 1 && Pair(symbols[read], symbols[read + 1]) == bestPair)
                {
                    symbols[write++] = bestMerged;
                    read++;
                }
                else
                {
                    symbols[write++] = symbols[read];
                }
            }

            symbols.RemoveRange(write, symbols.Count - write);
        }

        int[] result = [.. symbols];
        AddToCache(piece, result);
        return result;
    }

    private static long Pair(int left, int right) => ((long)left << 32) | (uint)right;

    /// <summary>
    /// Hashes a packed id pair. The default <see cref="long"/> hash XORs the two halves, so every (a, b) collides with
    /// (b, a) and the small byte-level ids crowd into a few buckets; this mixes all 64 bits instead.
    /// </summary>
    private sealed class PairComparer : IEqualityComparer<long>
    {
        public static readonly PairComparer Instance = new();

        public bool Equals(long x, long y) => x == y;

        public int GetHashCode(long obj) => (int)(((ulong)obj * 0x9E3779B97F4A7C15UL) >> 32);
    }

    /// <summary>The CJK ranges of BERT's <c>_is_chinese_char</c> (ideographs only; kana and hangul are not in them).</summary>
    private static bool IsCjk(int cp) =>
        cp is (>= 0x4E00 and <= 0x9FFF) or (>= 0x3400 and <= 0x4DBF) or (>= 0x20000 and <= 0x2A6DF) or (>= 0x2A700 and <= 0x2B73F)
            or (>= 0x2B740 and <= 0x2B81F) or (>= 0x2B820 and <= 0x2CEAF) or (>= 0xF900 and <= 0xFAFF) or (>= 0x2F800 and <= 0x2FA1F);

    /// <summary>GPT-2's byte-to-printable-character table: printable Latin-1 bytes map to themselves, the other 68 to U+0100 onwards.</summary>
    internal static char[] ByteAlphabet()
    {
        var table = new char[256];
        int extra = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is (>= '!' and <= '~') or (>= 0xA1 and <= 0xAC) or (>= 0xAE and <= 0xFF);
            table[b] = printable ? (char)b : (char)(256 + extra++);
        }

        return table;
    }

    private int Lookup(string token, string path) => Lookup(token, path, vocabulary);

    private static int Lookup(string token, string path, Dictionary<string, int> vocabulary) =>
        vocabulary.TryGetValue(token, out int id) ? id
            : throw new InvalidDataException($"{path}: the CLIP vocabulary has no entry for \"{token}\".");

    private static Dictionary<string, int> ReadVocabulary(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"CLIP vocabulary not found: {path}", path);
        }

        try
        {
            using FileStream stream = File.OpenRead(path);
            using JsonDocument document = JsonDocument.Parse(stream);
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"{path}: expected a JSON object from token to id.");
            }

            var vocabulary = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (JsonProperty entry in document.RootElement.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                {
                    throw new InvalidDataException($"{path}: the id of \"{entry.Name}\" is not a non-negative integer.");
                }

                vocabulary[entry.Name] = id;
            }

            return vocabulary;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e);
        }
    }

    private static Dictionary<long, (int, int)> ReadMerges(string path, Dictionary<string, int> vocabulary)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"CLIP merges not found: {path}", path);
        }

        var merges = new Dictionary<long, (int, int)>(PairComparer.Instance);
        int lineNumber = 0, rank = 0;
        foreach (string line in File.ReadLines(path))
        {
            lineNumber++;
            if (lineNumber == 1 && line.StartsWith("#version", StringComparison.Ordinal))
            {
                continue;
            }

            if (line.Length == 0 || rank >= MaxMerges)
            {
                continue;
            }

            int space = line.IndexOf(' ', StringComparison.Ordinal);
            if (space <= 0 || space == line.Length - 1 || line.IndexOf(' ', space + 1) >= 0)
            {
                throw new InvalidDataException($"{path}: line {lineNumber} is not a \"left right\" merge.");
            }

            string left = line[..space], right = line[(space + 1)..];
            if (!vocabulary.TryGetValue(left, out int leftId) || !vocabulary.TryGetValue(right, out int rightId)
                || !vocabulary.TryGetValue(left + right, out int mergedId))
            {
                throw new InvalidDataException($"{path}: line {lineNumber} merges tokens that are not in the vocabulary: \"{line}\".");
            }

            merges.TryAdd(Pair(leftId, rightId), (rank, mergedId));
            rank++;
        }

        if (rank == 0)
        {
            throw new InvalidDataException($"{path}: no merges.");
        }

        return merges;
    }

    private static string? ReadPadToken(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            using FileStream stream = File.OpenRead(path);
            using JsonDocument document = JsonDocument.Parse(stream);
            if (document.RootElement.ValueKind == JsonValueKind.Object && document.RootElement.TryGetProperty("pad_token", out JsonElement pad))
            {
                return pad.ValueKind switch
                {
                    JsonValueKind.String => pad.GetString(),
                    JsonValueKind.Object when pad.TryGetProperty("content", out JsonElement content) => content.GetString(),
                    _ => null,
                };
            }

            return null;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e);
        }
    }
}
