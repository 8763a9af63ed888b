using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Globalization;
using System.Text;

namespace FluxNative.Tokenizers;

/// <summary>
/// SentencePiece's <c>precompiled_charsmap</c> (the <c>nmt_nfkc</c> normaliser of T5's spiece.model, also embedded in
/// tokenizer.json as base64), applied the way Hugging Face <c>tokenizers</c>' <c>Precompiled</c> normaliser applies it.
/// </summary>
/// <remarks>
/// <para>The blob is a little-endian u32 byte size of a darts-clone double-array trie, the trie's u32 units, and a pool of
/// NUL-terminated UTF-8 replacement strings; a trie key is the UTF-8 of a character sequence and its value the offset
/// of the replacement.</para>
/// <para><c>tokenizers</c> (crate <c>spm_precompiled</c>) walks the text by extended grapheme cluster: a cluster shorter
/// than 6 UTF-8 bytes whose bytes start with a key is replaced <b>whole</b> by the replacement of the <b>shortest</b>
/// such key; otherwise each character of the cluster is looked up on its own. Raw SentencePiece instead does a
/// longest-prefix match at each byte position. The two agree on ordinary text; they differ on clusters such as
/// <c>"A\u0301\u0302"</c>, where tokenizers keeps only <c>"Á"</c> (the replacement of <c>"A\u0301"</c>) and
/// SentencePiece keeps the U+0302 too. FLUX runs tokenizers (T5TokenizerFast), so this class does what it does.
/// Grapheme clusters come from .NET's <see cref="StringInfo"/> (UAX #29).</para>
/// </remarks>
internal sealed class PrecompiledCharsmap
{
    private readonly uint[] units;
    private readonly byte[] pool;
    private readonly string?[] asciiReplacements = new string?[128];
    private readonly ConcurrentDictionary<int, string> replacements = new();

    public PrecompiledCharsmap(ReadOnlySpan<byte> blob, string sourceName)
    {
        if (blob.Length < 4)
        {
            throw new InvalidDataException($"{sourceName}: the precompiled charsmap is {blob.Length} bytes, too short.");
        }

        uint trieSize = BinaryPrimitives.ReadUInt32LittleEndian(blob);
        if (trieSize % 4 != 0 || trieSize == 0 || trieSize > blob.Length - 4)
        {
            throw new InvalidDataException($"{sourceName}: the precompiled charsmap's trie size {trieSize} does not fit its {blob.Length} bytes.");
        }

        units = new uint[trieSize / 4];
        for (int i = 0; i < units.Length; i++)
        {
            units[i] = BinaryPrimitives.ReadUInt32LittleEndian(blob[(4 + (4 * i))..]);
        }

        pool = blob[(4 + (int)trieSize)..].ToArray();
        Span<byte> one = stackalloc byte[1];
        for (int c = 1; c < 128; c++)
        {
            one[0] = (byte)c;
            asciiReplacements[c] = Transform(one);
        }
    }

    /// <summary>Normalises <paramref name="text"/>; returns the same instance when nothing changes.</summary>
    public string Normalize(string text)
    {
        StringBuilder? output = null;
        Span<byte> utf8 = stackalloc byte[8];
        int index = 0;
        while (index < text.Length)
        {
            char c = text[index];
            // Between two ASCII characters there is always a cluster boundary, except inside CR LF.
            if (c < 0x80 && (index + 1 == text.Length || (text[index + 1] < 0x80 && !(c == '\r' && text[index + 1] == '\n'))))
            {
                string? ascii = c == 0 ? null : asciiReplacements[c];
                if (ascii is not null)
                {
                    output ??= new StringBuilder(text, 0, index, text.Length + 16);
                    output.Append(ascii);
                }
                else
                {
                    output?.Append(c);
                }

                index++;
                continue;
            }

            int length = StringInfo.GetNextTextElementLength(text.AsSpan(index));
            ReadOnlySpan<char> cluster = text.AsSpan(index, length);
            string? replacement = null;
            int byteCount = Encoding.UTF8.GetByteCount(cluster);
            if (byteCount < 6)
            {
                Encoding.UTF8.GetBytes(cluster, utf8);
                replacement = Transform(utf8[..byteCount]);
            }

            if (replacement is not null)
            {
                output ??= new StringBuilder(text, 0, index, text.Length + 16);
                output.Append(replacement);
            }
            else
            {
                int offset = 0;
                while (offset < cluster.Length)
                {
                    Rune.DecodeFromUtf16(cluster[offset..], out Rune rune, out int runeLength);
                    int runeBytes = rune.EncodeToUtf8(utf8);
                    string? single = Transform(utf8[..runeBytes]);
                    if (single is not null)
                    {
                        output ??= new StringBuilder(text, 0, index + offset, text.Length + 16);
                        output.Append(single);
                    }
                    else
                    {
                        output?.Append(cluster.Slice(offset, runeLength));
                    }

                    offset += runeLength;
                }
            }

            index += length;
        }

        return output?.ToString() ?? text;
    }

    /// <summary>The replacement of the shortest key that is a prefix of <paramref name="key"/>, or null (spm_precompiled's <c>transform</c>).</summary>
    private string? Transform(ReadOnlySpan<byte> key)
    {
        uint position = Offset(units[0]);
        foreach (byte b in key)
        {
            if (b == 0)
            {
                return null;
            }

            position ^= b;
            if (position >= units.Length)
            {
                return null;
            }

            uint unit = units[position];
            if ((unit & 0x800000FFu) != b)
            {
                return null;
            }

            position ^= Offset(unit);
            if (((unit >> 8) & 1) != 0)
            {
                if (position >= units.Length)
                {
                    return null;
                }

                int start = (int)(units[position] & 0x7FFFFFFFu);
                if (start >= pool.Length)
                {
                    return null;
                }

                return replacements.GetOrAdd(start, static (offset, bytes) =>
                {
                    int end = Array.IndexOf(bytes, (byte)0, offset);
                    return Encoding.UTF8.GetString(bytes, offset, (end < 0 ? bytes.Length : end) - offset);
                }, pool);
            }
        }

        return null;
    }

    private static uint Offset(uint unit) => (unit >> 10) << (int)((unit & (1u << 9)) >> 6);
}
