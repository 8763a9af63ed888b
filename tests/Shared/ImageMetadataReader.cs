using System.Buffers.Binary;
using System.Text;
using System.Text.RegularExpressions;

namespace FluxNative.Testing;

/// <summary>
/// Reads the generation parameters back from image files the way outside tools do, written here from the format
/// specifications and independently of the library's writer: PNG <c>tEXt</c>/<c>iTXt</c> chunks (with their CRCs
/// checked), the Exif UserComment of a JPEG APP1 segment or a WebP <c>EXIF</c> chunk (either TIFF byte order),
/// and AUTOMATIC1111's split of the text into prompt and <c>Key: value</c> pairs.
/// </summary>
internal static partial class ImageMetadataReader
{
    /// <summary>The <c>parameters</c> text of a PNG, JPEG or WebP file; null when it has none.</summary>
    public static string? Parameters(byte[] file) => file switch
    {
        [0x89, (byte)'P', (byte)'N', (byte)'G', ..] => PngText(file, "parameters"),
        [0xFF, 0xD8, ..] => JpegUserComment(file),
        [(byte)'R', (byte)'I', (byte)'F', (byte)'F', _, _, _, _, (byte)'W', (byte)'E', (byte)'B', (byte)'P', ..] => WebpUserComment(file),
        _ => throw new ArgumentException("Not a PNG, JPEG or WebP file."),
    };

    /// <summary>The types of the PNG's chunks, in file order.</summary>
    public static List<string> PngChunkTypes(byte[] file)
    {
        var types = new List<string>();
        for (int at = 8; at + 12 <= file.Length;)
        {
            int length = checked((int)BinaryPrimitives.ReadUInt32BigEndian(file.AsSpan(at)));
            types.Add(Encoding.ASCII.GetString(file, at + 4, 4));
            at += 12 + length;
        }

        return types;
    }

    /// <summary>A1111's reading (modules/infotext_utils.py): the last line holds the pairs, the lines before it the prompt.</summary>
    public static (string Prompt, Dictionary<string, string> Pairs) Split(string parameters)
    {
        string[] lines = parameters.Trim().Split('\n');
        var pairs = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (Match match in Pair().Matches(lines[^1]))
        {
            pairs[match.Groups[1].Value] = match.Groups[2].Value.Trim();
        }

        return (string.Join('\n', lines[..^1]), pairs);
    }

    // A1111's re_param: a key of word characters, spaces, '-' and '/', then a value up to the next comma (or quoted).
    [GeneratedRegex("""\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)""")]
    private static partial Regex Pair();

    private static string? PngText(byte[] file, string keyword)
    {
        string? found = null;
        for (int at = 8; at + 12 <= file.Length;)
        {
            int length = checked((int)BinaryPrimitives.ReadUInt32BigEndian(file.AsSpan(at)));
            string type = Encoding.ASCII.GetString(file, at + 4, 4);
            ReadOnlySpan<byte> data = file.AsSpan(at + 8, length);
            uint crc = BinaryPrimitives.ReadUInt32BigEndian(file.AsSpan(at + 8 + length));
            Assert.True(crc == Crc32(file.AsSpan(at + 4, 4 + length)), $"bad CRC on the {type} chunk");
            int nul = data.IndexOf((byte)0);
            if ((type == "tEXt" || type == "iTXt") && nul > 0 && Encoding.Latin1.GetString(data[..nul]) == keyword)
            {
                Assert.True(found is null, $"two '{keyword}' chunks");
                if (type == "tEXt")
                {
                    found = Encoding.Latin1.GetString(data[(nul + 1)..]);
                }
                else
                {
                    // keyword \0 compression-flag method language \0 translated-keyword \0 text
                    Assert.Equal(0, data[nul + 1]);   // uncompressed
                    ReadOnlySpan<byte> rest = data[(nul + 3)..];
                    rest = rest[(rest.IndexOf((byte)0) + 1)..];
                    rest = rest[(rest.IndexOf((byte)0) + 1)..];
                    found = new UTF8Encoding(false, true).GetString(rest);
                }
            }

            at += 12 + length;
        }

        return found;
    }

    private static string? JpegUserComment(byte[] file)
    {
        for (int at = 2; at + 4 <= file.Length && file[at] == 0xFF;)
        {
            byte marker = file[at + 1];
            if (marker == 0xDA)
            {
                break;   // start of scan: the header segments are over
            }

            int length = BinaryPrimitives.ReadUInt16BigEndian(file.AsSpan(at + 2));
            ReadOnlySpan<byte> segment = file.AsSpan(at + 4, length - 2);
            if (marker == 0xE1 && segment.StartsWith("Exif\0\0"u8))
            {
                return UserComment(segment[6..]);
            }

            at += 2 + length;
        }

        return null;
    }

    private static string? WebpUserComment(byte[] file)
    {
        Assert.Equal(file.Length - 8, (int)BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(4)));
        for (int at = 12; at + 8 <= file.Length;)
        {
            string type = Encoding.ASCII.GetString(file, at, 4);
            int length = checked((int)BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(at + 4)));
            if (type == "EXIF")
            {
                return UserComment(file.AsSpan(at + 8, length));
            }

            at += 8 + length + (length & 1);   // chunks are padded to even sizes
        }

        return null;
    }

    // TIFF: IFD0 -> ExifIFDPointer (0x8769) -> UserComment (0x9286), "UNICODE\0" + UTF-16 in the TIFF's byte order.
    private static string? UserComment(ReadOnlySpan<byte> tiff)
    {
        bool big = tiff[0] == (byte)'M';
        uint U16(ReadOnlySpan<byte> s, int at) => big ? BinaryPrimitives.ReadUInt16BigEndian(s[at..]) : BinaryPrimitives.ReadUInt16LittleEndian(s[at..]);
        uint U32(ReadOnlySpan<byte> s, int at) => big ? BinaryPrimitives.ReadUInt32BigEndian(s[at..]) : BinaryPrimitives.ReadUInt32LittleEndian(s[at..]);
        Assert.Equal(42u, U16(tiff, 2));
        int? Find(ReadOnlySpan<byte> s, int ifd, uint tag, out int count)
        {
            for (int i = 0; i < U16(s, ifd); i++)
            {
                int entry = ifd + 2 + 12 * i;
                if (U16(s, entry) == tag)
                {
                    count = (int)U32(s, entry + 4);
                    return count <= 4 ? entry + 8 : (int)U32(s, entry + 8);
                }
            }

            count = 0;
            return null;
        }

        if (Find(tiff, (int)U32(tiff, 4), 0x8769, out _) is not int pointer || Find(tiff, (int)U32(tiff, pointer), 0x9286, out int size) is not int comment)
        {
            return null;
        }

        ReadOnlySpan<byte> value = tiff.Slice(comment, size);
        Assert.True(value.StartsWith("UNICODE\0"u8), "UserComment is not in the UNICODE encoding");
        return (big ? Encoding.BigEndianUnicode : Encoding.Unicode).GetString(value[8..]);
    }

    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++)
            {
                crc = (crc & 1) != 0 ? 0xEDB88320 ^ (crc >> 1) : crc >> 1;
            }
        }

        return ~crc;
    }
}
