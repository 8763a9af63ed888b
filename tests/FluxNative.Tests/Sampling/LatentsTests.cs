namespace FluxNative.Tests.Sampling;

public class LatentsTests
{
    [Fact]
    public void Pack_follows_the_spec_index_formula_and_unpack_inverts_it()
    {
        const int B = 2, C = 16, h = 6, w = 10;
        float[] z = LatentNoise.Generate(3, B, C, h, w);
        float[] packed = Latents.Pack(z, B, C, h, w);
        int tokens = h / 2 * (w / 2);
        for (int b = 0; b < B; b++)
        {
            for (int c = 0; c < C; c++)
            {
                for (int y = 0; y < h; y++)
                {
                    for (int x = 0; x < w; x++)
                    {
                        int n = y / 2 * (w / 2) + x / 2, k = 4 * c + 2 * (y % 2) + x % 2;
                        Assert.Equal(z[((b * C + c) * h + y) * w + x], packed[(b * tokens + n) * 4 * C + k]);
                    }
                }
            }
        }

        Assert.Equal(z, Latents.Unpack(packed, B, C, h, w));
    }

    [Fact]
    public void Image_ids_are_zero_row_column_and_text_ids_zero()
    {
        float[] ids = Latents.ImageIds(2, 4, 6);   // 2 x 3 patches
        float[] expected = [0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 1, 0, 0, 1, 1, 0, 1, 2];
        Assert.Equal(expected.Concat(expected), ids);
        Assert.All(Latents.TextIds(2, 5), v => Assert.Equal(0f, v));
        Assert.Equal(30, Latents.TextIds(2, 5).Length);
    }

    [Fact]
    public void Euler_step_adds_dt_times_velocity()
    {
        float[] x = [1, 2, 3];
        Latents.EulerStep(x, [10, -10, 0.5f], -0.25f);
        Assert.Equal([1 - 2.5f, 2 + 2.5f, 3 - 0.125f], x);
        Assert.Throws<ArgumentException>(() => Latents.EulerStep(new float[3], new float[2], 0.1f));
    }

    [Fact]
    public void Odd_sizes_are_refused_with_the_reason()
    {
        var e = Assert.Throws<FluxNativeException>(() => Latents.Pack(new float[16 * 3 * 4], 1, 16, 3, 4));
        Assert.Contains("even", e.Message);
    }
}
