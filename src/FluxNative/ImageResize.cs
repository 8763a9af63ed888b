namespace FluxNative;

/// <summary>
/// Resizes 8-bit RGB images for image-to-image inputs: separable triangle (bilinear) filtering whose support widens
/// with the downscale factor, so that shrinking averages every source pixel instead of skipping most of them (the
/// "antialiased bilinear" of PIL and of torchvision with antialias=True). Enlarging is plain bilinear.
/// </summary>
public static class ImageResize
{
    /// <summary>Returns <paramref name="image"/> resized to <paramref name="width"/>×<paramref name="height"/> (the same object when the size already matches).</summary>
    public static RgbImage Resize(RgbImage image, int width, int height)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        if (image.Rgb.Length != 3L * image.Width * image.Height)
        {
            throw new ArgumentException($"The image holds {image.Rgb.Length} bytes but {image.Width}×{image.Height} RGB needs {3L * image.Width * image.Height}.", nameof(image));
        }

        if (image.Width == width && image.Height == height)
        {
            return image;
        }

        // Rows first (source height kept), then columns; float in between so that rounding happens once.
        var source = new float[image.Rgb.Length];
        for (int i = 0; i < source.Length; i++)
        {
            source[i] = image.Rgb[i];
        }

        float[] wide = Horizontal(source, image.Width, image.Height, width);
        float[] both = Vertical(wide, width, image.Height, height);
        var rgb = new byte[both.Length];
        for (int i = 0; i < both.Length; i++)
        {
            rgb[i] = (byte)Math.Clamp(MathF.Round(both[i]), 0, 255);
        }

        return new RgbImage(width, height, rgb);
    }

    /// <summary>The sampling weights of one axis: for each output index, the first source index and its normalised weights.</summary>
    internal static (int First, float[] Weights)[] Weights(int sourceLength, int targetLength)
    {
        double scale = (double)sourceLength / targetLength;
        double support = Math.Max(scale, 1.0);   // the triangle's half-width, in source pixels
        var result = new (int, float[])[targetLength];
        for (int i = 0; i < targetLength; i++)
        {
            double center = ((i + 0.5) * scale) - 0.5;
            int first = Math.Max(0, (int)Math.Floor(center - support) + 1);
            int last = Math.Min(sourceLength - 1, (int)Math.Ceiling(center + support) - 1);
            var weights = new double[Math.Max(1, last - first + 1)];
            double sum = 0;
            for (int j = first; j <= last; j++)
            {
                double wj = Math.Max(0, 1 - (Math.Abs(j - center) / support));
                weights[j - first] = wj;
                sum += wj;
            }

            if (sum <= 0)
            {
                // The centre falls outside the image (only at an edge of an enlargement): take the nearest pixel.
                first = Math.Clamp((int)Math.Round(center), 0, sourceLength - 1);
                weights = [1.0];
                sum = 1;
            }

            result[i] = (first, weights.Select(wj => (float)(wj / sum)).ToArray());
        }

        return result;
    }

    private static float[] Horizontal(float[] source, int sourceWidth, int rows, int width)
    {
        (int First, float[] Weights)[] taps = Weights(sourceWidth, width);
        var output = new float[3L * width * rows];
        for (int y = 0; y < rows; y++)
        {
            int rowIn = y * sourceWidth * 3, rowOut = y * width * 3;
            for (int x = 0; x < width; x++)
            {
                (int first, float[] weights) = taps[x];
                float r = 0, g = 0, b = 0;
                for (int k = 0; k < weights.Length; k++)
                {
                    int at = rowIn + ((first + k) * 3);
                    r += weights[k] * source[at];
                    g += weights[k] * source[at + 1];
                    b += weights[k] * source[at + 2];
                }

                output[rowOut + (x * 3)] = r;
                output[rowOut + (x * 3) + 1] = g;
                output[rowOut + (x * 3) + 2] = b;
            }
        }

        return output;
    }

    private static float[] Vertical(float[] source, int width, int sourceHeight, int height)
    {
        (int First, float[] Weights)[] taps = Weights(sourceHeight, height);
        int stride = width * 3;
        var output = new float[(long)stride * height];
        for (int y = 0; y < height; y++)
        {
            (int first, float[] weights) = taps[y];
            Span<float> row = output.AsSpan(y * stride, stride);
            for (int k = 0; k < weights.Length; k++)
            {
                ReadOnlySpan<float> input = source.AsSpan((first + k) * stride, stride);
                float wk = weights[k];
                for (int i = 0; i < stride; i++)
                {
                    row[i] += wk * input[i];
                }
            }
        }

        return output;
    }
}
