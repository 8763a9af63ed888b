using System.Runtime.CompilerServices;

namespace FluxNative;

/// <summary>
/// The initial Gaussian noise of a generation, as a pure function of a seed: the same seed gives the same
/// latents (and so the same image, within numeric tolerance) on every machine and backend.
/// </summary>
/// <remarks>
/// <para>Generator: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011),
/// a counter-based generator, with key = the seed's low and high 32-bit words. Element <c>i</c> of the
/// latent <c>[C, h, w]</c> (row-major, drawn in this unpacked layout as docs/flux-model.md §4.2 says) uses block
/// counter (i / 4, 0, 0, 0) and output word pair (i mod 4) / 2: words (a, b) give, by Box–Muller,
/// u₁ = (a + 1)/2³², u₂ = b/2³², r = √(−2 ln u₁), z = r·cos(2πu₂) for the even element of the pair and
/// r·sin(2πu₂) for the odd one; computed in double and rounded to float.</para>
/// <para>Image <c>k</c> of a batch is drawn with seed <c>seed + k</c>, so image k of a batch equals a
/// single-image generation with seed + k.</para>
/// <para>This does not reproduce PyTorch's CPU generator (docs/flux-model.md §4.2: out of scope); to match a PyTorch
/// run, pass its noise as initial latents. Across machines the values agree to the last bit wherever the
/// platform's Math.Log/Cos/Sin do (they are correctly rounded or within one ulp in double, far below float
/// resolution).</para>
/// </remarks>
public static class LatentNoise
{
    /// <summary>Fills <paramref name="destination"/> (one latent, <c>[C, h, w]</c> row-major) with N(0, 1) noise for <paramref name="seed"/>.</summary>
    public static void Fill(long seed, Span<float> destination)
    {
        uint key0 = (uint)seed, key1 = (uint)((ulong)seed >> 32);
        int length = destination.Length;
        for (int block = 0; block * 4 < length; block++)
        {
            (uint x0, uint x1, uint x2, uint x3) = Philox4x32(((uint)block, 0u, 0u, 0u), key0, key1);
            int i = block * 4;
            WritePair(destination, i, x0, x1);
            WritePair(destination, i + 2, x2, x3);
        }
    }

    /// <summary>N(0, 1) noise for a batch: image k uses seed + k. Returns <c>[count, C, h, w]</c>.</summary>
    public static float[] Generate(long seed, int count, int channels, int height, int width)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(channels, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        int perImage = checked(channels * height * width);
        var noise = new float[checked(perImage * count)];
        for (int k = 0; k < count; k++)
        {
            Fill(unchecked(seed + k), noise.AsSpan(k * perImage, perImage));
        }

        return noise;
    }

    /// <summary>One Philox4x32-10 block: ten rounds, the key bumped by the Weyl constants between rounds.</summary>
    public static (uint, uint, uint, uint) Philox4x32((uint, uint, uint, uint) counter, uint key0, uint key1)
    {
        const uint M0 = 0xD2511F53, M1 = 0xCD9E8D57, W0 = 0x9E3779B9, W1 = 0xBB67AE85;
        (uint c0, uint c1, uint c2, uint c3) = counter;
        for (int round = 0; round < 10; round++)
        {
            if (round > 0)
            {
                key0 += W0;
                key1 += W1;
            }

            ulong p0 = (ulong)M0 * c0, p1 = (ulong)M1 * c2;
            uint hi0 = (uint)(p0 >> 32), lo0 = (uint)p0, hi1 = (uint)(p1 >> 32), lo1 = (uint)p1;
            (c0, c1, c2, c3) = (hi1 ^ c1 ^ key0, lo1, hi0 ^ c3 ^ key1, lo0);
        }

        return (c0, c1, c2, c3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WritePair(Span<float> destination, int index, uint a, uint b)
    {
        if (index >= destination.Length)
        {
            return;
        }

        const double TwoToMinus32 = 1.0 / 4294967296.0;
        double u1 = (a + 1.0) * TwoToMinus32;   // (0, 1]: the logarithm stays finite
        double u2 = b * TwoToMinus32;           // [0, 1)
        double r = Math.Sqrt(-2.0 * Math.Log(u1));
        double angle = 2.0 * Math.PI * u2;
        destination[index] = (float)(r * Math.Cos(angle));
        if (index + 1 < destination.Length)
        {
            destination[index + 1] = (float)(r * Math.Sin(angle));
        }
    }
}
