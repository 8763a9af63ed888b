using FluxNative.Interop;

namespace FluxNative;

/// <summary>Image file formats FluxNative writes (through libpng, libjpeg-turbo and libwebp in the native library).</summary>
public enum ImageFormat
{
    /// <summary>PNG: lossless; quality is ignored.</summary>
    Png = 1,

    /// <summary>JPEG (libjpeg-turbo): 4:2:0 chroma below quality 90, 4:4:4 from 90.</summary>
    Jpeg = 2,

    /// <summary>WebP (libwebp), lossy.</summary>
    Webp = 3,
}

/// <summary>How model pixels in [−1, 1] become 8-bit values (docs/flux-model.md §7.5).</summary>
public enum PixelRounding
{
    /// <summary>round(127.5·(x + 1)), ties to even, as diffusers does: the nearer 8-bit level (the default).</summary>
    Round = 0,

    /// <summary>truncate(127.5·(x + 1)), as BFL does (PyTorch <c>.byte()</c>): never rounds up.</summary>
    Truncate = 1,
}

/// <summary>A decoded image: interleaved 8-bit RGB, <c>[Height, Width, 3]</c>.</summary>
public sealed record RgbImage(int Width, int Height, byte[] Rgb);

/// <summary>8-bit conversion and image files, done natively.</summary>
public static class Images
{
    /// <summary>File extension (without the dot) conventionally used for <paramref name="format"/>.</summary>
    public static string Extension(ImageFormat format) => format switch
    {
        ImageFormat.Png => "png",
        ImageFormat.Jpeg => "jpg",
        ImageFormat.Webp => "webp",
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "Not an ImageFormat."),
    };

    /// <summary>Parses "png", "jpg"/"jpeg" or "webp" (any case).</summary>
    public static bool TryParseFormat(string? text, out ImageFormat format)
    {
        switch (text?.Trim().ToLowerInvariant())
        {
            case "png": format = ImageFormat.Png; return true;
            case "jpg" or "jpeg": format = ImageFormat.Jpeg; return true;
            case "webp": format = ImageFormat.Webp; return true;
            default: format = default; return false;
        }
    }

    /// <summary>Planar model pixels <c>[3, height, width]</c> (clamped to [−1, 1]) to interleaved 8-bit RGB.</summary>
    public static unsafe byte[] ToRgb8(ReadOnlySpan<float> pixels, int width, int height, PixelRounding rounding = PixelRounding.Round)
    {
        CheckSize(width, height);
        long count = 3L * width * height;
        if (pixels.Length != count)
        {
            throw new ArgumentException($"pixels has {pixels.Length} values but [3, {height}, {width}] needs {count}.", nameof(pixels));
        }

        byte[] rgb = GC.AllocateUninitializedArray<byte>(checked((int)count));
        fixed (float* source = pixels)
        fixed (byte* destination = rgb)
        {
            NativeStatus.ThrowIfFailed(NativeMethods.fx_pixels_to_rgb8(source, width, height, (int)rounding, destination, (nuint)rgb.Length));
        }

        return rgb;
    }

    /// <summary>Interleaved 8-bit RGB to planar pixels <c>[3, height, width]</c> in [−1, 1] (for the encoder).</summary>
    public static unsafe float[] FromRgb8(ReadOnlySpan<byte> rgb, int width, int height)
    {
        CheckSize(width, height);
        long count = 3L * width * height;
        if (rgb.Length != count)
        {
            throw new ArgumentException($"rgb has {rgb.Length} bytes but [{height}, {width}, 3] needs {count}.", nameof(rgb));
        }

        float[] pixels = GC.AllocateUninitializedArray<float>(checked((int)count));
        fixed (byte* source = rgb)
        fixed (float* destination = pixels)
        {
            NativeStatus.ThrowIfFailed(NativeMethods.fx_rgb8_to_pixels(source, width, height, destination, (nuint)pixels.Length));
        }

        return pixels;
    }

    /// <summary>
    /// The longest <c>parameters</c> text <see cref="Encode"/> takes, in UTF-8 bytes: what always fits JPEG's one Exif
    /// segment (as UTF-16).
    /// </summary>
    public const int MaxParametersBytes = NativeMethods.MaxParametersBytes;

    /// <summary>Encodes interleaved 8-bit RGB as an image file in memory.</summary>
    /// <param name="rgb">Pixels, <c>[height, width, 3]</c>.</param>
    /// <param name="width">Width in pixels.</param>
    /// <param name="height">Height in pixels.</param>
    /// <param name="format">The file format.</param>
    /// <param name="quality">1–100 for JPEG and WebP; PNG accepts 0–100 and ignores it.</param>
    /// <param name="parameters">
    /// Null or empty for none; otherwise the generation parameters in AUTOMATIC1111's layout (see
    /// <see cref="GenerationParameters"/>), stored as PNG's <c>parameters</c> text chunk (tEXt, or iTXt for text that is not
    /// Latin-1), or as the Exif UserComment of a JPEG (APP1) or WebP (EXIF chunk) file. At most
    /// <see cref="MaxParametersBytes"/> UTF-8 bytes, without NUL characters.
    /// </param>
    /// <exception cref="ArgumentException"><paramref name="parameters"/> holds a NUL character or is too long.</exception>
    /// <exception cref="FluxNativeException">A bad size or quality (<see cref="FluxStatus.InvalidArgument"/>), or an encoder failure.</exception>
    public static unsafe byte[] Encode(ReadOnlySpan<byte> rgb, int width, int height, ImageFormat format, int quality = 80, string? parameters = null)
    {
        CheckSize(width, height);
        if (!Enum.IsDefined(format))
        {
            throw new ArgumentOutOfRangeException(nameof(format), format, "Not an ImageFormat.");
        }

        if (rgb.Length != 3L * width * height)
        {
            throw new ArgumentException($"rgb has {rgb.Length} bytes but [{height}, {width}, 3] needs {3L * width * height}.", nameof(rgb));
        }

        byte[]? text = ParametersUtf8Z(parameters);
        FxImageEncodeParams native;
        NativeMethods.fx_image_encode_params_init(&native);
        native.Format = (int)format;
        native.Quality = quality;
        BlobHandle blob;
        fixed (byte* source = rgb)
        fixed (byte* textZ = text)
        {
            native.ParametersText = textZ;   // null when there is no text: no chunk
            NativeStatus.ThrowIfFailed(NativeMethods.fx_image_encode(source, width, height, &native, out blob));
        }

        using (blob)
        {
            return blob.ToArray();
        }
    }

    /// <summary>Decodes a PNG, JPEG or WebP file in memory (the format is read from its signature) to 8-bit RGB.</summary>
    /// <exception cref="FluxNativeException">Not one of those formats, or corrupt (<see cref="FluxStatus.Format"/>).</exception>
    public static unsafe RgbImage Decode(ReadOnlySpan<byte> file, out ImageFormat format)
    {
        int width, height, nativeFormat;
        BlobHandle blob;
        fixed (byte* data = file)
        {
            NativeStatus.ThrowIfFailed(NativeMethods.fx_image_decode(data, (nuint)file.Length, &width, &height, &nativeFormat, out blob));
        }

        using (blob)
        {
            format = (ImageFormat)nativeFormat;
            return new RgbImage(width, height, blob.ToArray());
        }
    }

    // NUL-terminated UTF-8 for the C ABI, or null for no text. A NUL inside would end the C string early and cut
    // the text without a word, so it is refused here; lone surrogates become U+FFFD (the encoder's replacement), so
    // the library always receives valid UTF-8.
    private static byte[]? ParametersUtf8Z(string? parameters)
    {
        if (string.IsNullOrEmpty(parameters))
        {
            return null;
        }

        int nul = parameters.IndexOf('\0', StringComparison.Ordinal);
        if (nul >= 0)
        {
            throw new ArgumentException($"The parameters text holds a NUL character (at {nul}), which no image text chunk can carry.", nameof(parameters));
        }

        int count = System.Text.Encoding.UTF8.GetByteCount(parameters);
        if (count > MaxParametersBytes)
        {
            throw new ArgumentException($"The parameters text is {count} UTF-8 bytes; image files take at most {MaxParametersBytes}.", nameof(parameters));
        }

        byte[] bytes = new byte[count + 1];
        System.Text.Encoding.UTF8.GetBytes(parameters, bytes);
        return bytes;
    }

    private static void CheckSize(int width, int height)
    {
        if (width < 1 || height < 1)
        {
            throw new ArgumentException($"width and height must be at least 1 (got {width}×{height}).");
        }
    }
}
