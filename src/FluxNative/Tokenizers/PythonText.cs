using System.Globalization;
using System.Text;

namespace FluxNative.Tokenizers;

/// <summary>
/// The few pieces of Python's string semantics that transformers' slow CLIPTokenizer depends on, done on
/// Unicode scalar values (Python strings are sequences of code points, .NET strings of UTF-16 units).
/// Character properties come from .NET's tables, which may be a newer Unicode version than the Python that
/// produced the goldens (Python 3.11: Unicode 14.0); only characters assigned after that can differ.
/// </summary>
internal static class PythonText
{
    /// <summary>Unicode general category "C*" (Cc, Cf, Cs, Co, Cn): what BasicTokenizer's <c>_is_control</c> tests, minus tab/newline/CR.</summary>
    public static bool IsOther(UnicodeCategory category) => category is UnicodeCategory.Control or UnicodeCategory.Format
        or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned;

    /// <summary>Unicode letters, any of Lu Ll Lt Lm Lo (regex <c>\p{L}</c>).</summary>
    public static bool IsLetter(UnicodeCategory category) => category <= UnicodeCategory.OtherLetter;

    /// <summary>Unicode numbers, any of Nd Nl No (regex <c>\p{N}</c>).</summary>
    public static bool IsNumber(UnicodeCategory category) =>
        category is UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber;

    /// <summary>
    /// Python's <c>str.lower()</c> of one whitespace-free word, appended to <paramref name="output"/>: the full
    /// lower-case mapping, which differs from .NET's simple invariant mapping in two places: U+0130 (İ) becomes
    /// "i\u0307", and a capital sigma becomes final ς when it ends a word (Unicode's Final_Sigma context).
    /// </summary>
    public static void AppendLower(ReadOnlySpan<char> word, StringBuilder output)
    {
        Span<char> buffer = stackalloc char[2];
        int index = 0;
        while (index < word.Length)
        {
            Rune.DecodeFromUtf16(word[index..], out Rune rune, out int length);
            if (rune.Value == 0x130)
            {
                output.Append("i\u0307");
            }
            else if (rune.Value == 0x3A3)
            {
                output.Append(IsFinalSigma(word, index) ? 'ς' : 'σ');
            }
            else if (rune.IsAscii)
            {
                output.Append((char)(rune.Value is >= 'A' and <= 'Z' ? rune.Value + 32 : rune.Value));
            }
            else
            {
                Rune lower = Rune.ToLowerInvariant(rune);
                output.Append(buffer[..lower.EncodeToUtf16(buffer)]);
            }

            index += length;
        }
    }

    /// <summary>
    /// Python's Final_Sigma test: a cased letter before the sigma (skipping case-ignorable characters) and no
    /// cased letter after it (again skipping case-ignorable ones).
    /// </summary>
    private static bool IsFinalSigma(ReadOnlySpan<char> word, int sigma)
    {
        int before = sigma;
        bool casedBefore = false;
        while (before > 0)
        {
            Rune.DecodeLastFromUtf16(word[..before], out Rune rune, out int length);
            before -= length;
            if (!IsCaseIgnorable(rune))
            {
                casedBefore = IsCased(rune);
                break;
            }
        }

        if (!casedBefore)
        {
            return false;
        }

        int after = sigma + 1;
        while (after < word.Length)
        {
            Rune.DecodeFromUtf16(word[after..], out Rune rune, out int length);
            after += length;
            if (!IsCaseIgnorable(rune))
            {
                return !IsCased(rune);
            }
        }

        return true;
    }

    /// <summary>Approximates Unicode's Cased property: upper-, lower- and title-case letters plus the Other_Lowercase/Other_Uppercase symbols that matter in practice.</summary>
    private static bool IsCased(Rune rune)
    {
        UnicodeCategory category = Rune.GetUnicodeCategory(rune);
        return category is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
            || rune.Value is 0xAA or 0xBA || (rune.Value >= 0x2160 && rune.Value <= 0x217F) || (rune.Value >= 0x24B6 && rune.Value <= 0x24E9);
    }

    /// <summary>Approximates Unicode's Case_Ignorable property: marks, format characters, modifier letters and symbols, and the word-internal punctuation (' . : · ’ …).</summary>
    private static bool IsCaseIgnorable(Rune rune)
    {
        if (rune.Value is '\'' or '.' or ':' or '^' or '`' or 0xB7 or 0x2018 or 0x2019 or 0x2024 or 0x2027 or 0xAD)
        {
            return true;
        }

        UnicodeCategory category = Rune.GetUnicodeCategory(rune);
        return category is UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark or UnicodeCategory.Format
            or UnicodeCategory.ModifierLetter or UnicodeCategory.ModifierSymbol;
    }
}
