using FluxNative.Testing;

namespace FluxNative.Tests.Pipeline;

/// <summary>The preview projection: its least-squares fit, its fit to an autoencoder, its rendering.</summary>
public class LatentPreviewTests
{
    [Fact]
    public void FitLinear_recovers_a_known_linear_map_exactly()
    {
        // y = W·x + b with a 3x4 W, on 20 random points: the fit must give W and b back (the ridge term is 1e-6 of the
        // data's scale, far below the tolerance).
        double[,] w = { { 0.5, -1, 0.25, 2 }, { -0.75, 0.1, 1.5, 0 }, { 0.3, 0.3, -0.3, -1 } };
        double[] b = [0.1, -0.2, 0.05];
        var random = new Random(3);
        var x = new List<double[]>();
        var y = new List<double[]>();
        for (int i = 0; i < 20; i++)
        {
            double[] xi = [.. Enumerable.Range(0, 4).Select(_ => (random.NextDouble() * 4) - 2)];
            x.Add(xi);
            y.Add([.. Enumerable.Range(0, 3).Select(o => b[o] + Enumerable.Range(0, 4).Sum(p => w[o, p] * xi[p]))]);
        }

        (float[] weights, float[] bias, double rms) = LatentPreview.FitLinear(x, y);

        for (int o = 0; o < 3; o++)
        {
            Assert.Equal(b[o], bias[o], 4);
            for (int p = 0; p < 4; p++)
            {
                Assert.Equal(w[o, p], weights[(o * 4) + p], 4);
            }
        }

        Assert.True(rms < 1e-4, $"rms {rms}");
    }

    [Fact]
    public void The_fit_to_an_autoencoder_explains_its_colours_better_than_their_mean()
    {
        // Honesty check of the method on the demo's (random) autoencoder: the fitted projection must predict the 64
        // patch colours better than the best constant does (the colours' RMS about their mean, ~95 of 255 levels).
        using var temp = new TempDirectory();
        string path = temp.File("ae.safetensors");
        TinyModel.Write(new TinyModelOptions { Kind = ModelKind.Autoencoder, Depth = 4, DepthSingle = 2, Seed = 1 }, path);
        using Autoencoder autoencoder = Autoencoder.Load(path);

        LatentPreview preview = LatentPreview.For(autoencoder);

        double levels = 255.0 / (LatentPreview.Levels - 1);
        double constantRms = Math.Sqrt(Enumerable.Range(0, LatentPreview.Levels).Select(l => Math.Pow((l * levels) - 127.5, 2)).Average());
        Assert.Equal(autoencoder.Config.ZChannels, preview.Channels);
        Assert.StartsWith("least-squares fit", preview.Method, StringComparison.Ordinal);
        Assert.InRange(preview.FitError, 0, constantRms * 0.9);
    }

    [Fact]
    public void GreyMean_renders_the_channel_mean_as_grey()
    {
        LatentPreview grey = LatentPreview.GreyMean(2);
        // Two channels, two pixels: means 0 (mid grey, 128) and 1 (white).
        RgbImage image = grey.Render([0.5f, 1f, -0.5f, 1f], height: 1, width: 2);

        Assert.Equal([128, 128, 128, 255, 255, 255], image.Rgb);
        Assert.True(double.IsNaN(grey.FitError));
    }

    [Fact]
    public void Render_applies_weights_and_bias_per_pixel_and_clamps()
    {
        // red = c0, green = -c1, blue = 0.5 + 0 (bias only).
        var preview = new LatentPreview([1, 0, 0, -1, 0, 0], [0, 0, 0.5f], "test");
        RgbImage image = preview.Render([0f, 2f, 1f, 0f], height: 1, width: 2);

        // Pixel 0: c0 = 0, c1 = 1 -> (128, 0, 191); pixel 1: c0 = 2 (clamped to 1), c1 = 0 -> (255, 128, 191).
        Assert.Equal([128, 0, 191, 255, 128, 191], image.Rgb);
        Assert.Throws<ArgumentException>(() => preview.Render([0f, 1f], height: 1, width: 2));
    }
}
