namespace FluxNative.Tests.Sampling;

public class LatentNoiseTests
{
    // Known-answer tests of Random123 (kat_vectors): counter, key -> output.
    [Theory]
    [InlineData(0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u)]
    [InlineData(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu)]
    [InlineData(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u, 0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u)]
    public void Philox4x32_10_matches_the_Random123_known_answers(
        uint c0, uint c1, uint c2, uint c3, uint k0, uint k1, uint r0, uint r1, uint r2, uint r3)
    {
        Assert.Equal((r0, r1, r2, r3), LatentNoise.Philox4x32((c0, c1, c2, c3), k0, k1));
    }

    [Fact]
    public void The_same_seed_gives_the_same_noise_and_another_seed_other_noise()
    {
        float[] a = LatentNoise.Generate(42, 1, 16, 6, 10);
        float[] b = LatentNoise.Generate(42, 1, 16, 6, 10);
        float[] c = LatentNoise.Generate(43, 1, 16, 6, 10);
        Assert.Equal(a, b);
        Assert.True(a.Zip(c).Count(p => p.First == p.Second) < 3, "seeds 42 and 43 gave (nearly) the same noise");
    }

    [Fact]
    public void Image_k_of_a_batch_is_the_single_image_of_seed_plus_k()
    {
        float[] batch = LatentNoise.Generate(1000, 3, 16, 4, 6);
        int per = 16 * 4 * 6;
        for (int k = 0; k < 3; k++)
        {
            Assert.Equal(LatentNoise.Generate(1000 + k, 1, 16, 4, 6), batch.AsSpan(k * per, per).ToArray());
        }
    }

    [Fact]
    public void A_prefix_of_the_noise_does_not_depend_on_the_length()
    {
        // Counter-based: element i depends on (seed, i) only, also for lengths that are not multiples of 4.
        var longer = new float[1027];
        var shorter = new float[13];
        LatentNoise.Fill(7, longer);
        LatentNoise.Fill(7, shorter);
        Assert.Equal(shorter, longer.AsSpan(0, 13).ToArray());
    }

    [Fact]
    public void Noise_is_standard_normal()
    {
        float[] z = LatentNoise.Generate(123456789, 1, 16, 128, 128);   // 262144 values, the 1024x1024 latent
        double mean = z.Average(v => (double)v);
        double variance = z.Average(v => ((double)v - mean) * ((double)v - mean));
        double within1 = z.Count(v => Math.Abs(v) < 1) / (double)z.Length;
        double beyond3 = z.Count(v => Math.Abs(v) > 3) / (double)z.Length;
        Assert.All(z, v => Assert.True(float.IsFinite(v)));
        Assert.True(Math.Abs(mean) < 0.01, $"mean {mean}");
        Assert.True(Math.Abs(variance - 1) < 0.01, $"variance {variance}");
        Assert.True(Math.Abs(within1 - 0.682689) < 0.005, $"P(|z| < 1) = {within1}");
        Assert.True(Math.Abs(beyond3 - 0.0027) < 0.0008, $"P(|z| > 3) = {beyond3}");
    }

    [Fact]
    public void Negative_and_large_seeds_work()
    {
        Assert.NotEqual(LatentNoise.Generate(-5, 1, 1, 2, 2), LatentNoise.Generate(5, 1, 1, 2, 2));
        Assert.All(LatentNoise.Generate(long.MaxValue, 1, 1, 4, 4), v => Assert.True(float.IsFinite(v)));
    }
}
