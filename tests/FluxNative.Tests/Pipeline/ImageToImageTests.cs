using FluxNative.Testing;

namespace FluxNative.Tests.Pipeline;

/// <summary>
/// Image-to-image around the golden case (PipelineGoldenTests "dev-img2img"): sizes an input image gives, the
/// strength and its start step, the edges (strength 1 is text-to-image), batching, and the resize.
/// </summary>
public class ImageToImageTests(TinyPipelines pipelines) : IClassFixture<TinyPipelines>
{
    private FluxPipeline Dev => pipelines.Dev;

    [Theory]
    [InlineData(0.6, 5, 2)]
    [InlineData(1.0, 28, 0)]
    [InlineData(0.75, 28, 7)]
    [InlineData(0.3, 10, 7)]     // (1 − 0.3)·10 is 6.999… in binary; the start is still step 7
    [InlineData(0.01, 28, 27)]
    [InlineData(1e-9, 4, 3)]     // at least one step runs
    public void The_strength_sets_the_start_step(double strength, int steps, int start)
    {
        GenerationPlan plan = Dev.Plan(Request(Gradient(64, 48)) with { Strength = strength, Steps = steps });
        Assert.Equal(start, plan.StartStep);
        Assert.Equal(steps - start, plan.StepsToRun);
        Assert.Equal(strength, plan.Strength);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(-0.1)]
    [InlineData(1.01)]
    [InlineData(double.NaN)]
    public void A_strength_outside_0_to_1_is_refused(double strength)
    {
        var e = Assert.Throws<GenerationRequestException>(() => Dev.Plan(Request(Gradient(64, 48)) with { Strength = strength }));
        Assert.Equal("strength", e.Field);
    }

    [Fact]
    public void A_strength_without_an_image_and_a_broken_image_are_refused()
    {
        Assert.Equal("strength", Assert.Throws<GenerationRequestException>(() => Dev.Plan(pipelines.Request(Dev) with { Strength = 0.5 })).Field);
        Assert.Equal("image", Assert.Throws<GenerationRequestException>(() =>
            Dev.Plan(Request(new RgbImage(8, 8, new byte[10])))).Field);
    }

    [Theory]
    [InlineData(64, 48, 64, 48)]        // multiples of 16: as it is
    [InlineData(100, 70, 96, 64)]       // rounded to the nearest multiple of 16
    [InlineData(5000, 2500, 2048, 1024)] // scaled down into MaxSide (2048 here)
    public void Without_a_size_the_output_takes_the_image_size(int width, int height, int wantWidth, int wantHeight)
    {
        using var bounded = new FluxPipeline(Dev.Transformer, Dev.Autoencoder, Dev.Options with { MaxSide = 2048 }, ownsModels: false);
        GenerationPlan plan = bounded.Plan(Request(new RgbImage(width, height, new byte[3 * width * height])) with { Width = null, Height = null });
        Assert.Equal((wantWidth, wantHeight), (plan.Width, plan.Height));
        Assert.Equal(width != wantWidth || height != wantHeight, plan.Warnings.Any(w => w.Contains("resized", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task Strength_one_is_text_to_image_of_the_same_seed()
    {
        GenerationRequest text = pipelines.Request(Dev, seed: 21) with { ReturnLatents = true };
        GenerationResult plain = await Dev.GenerateAsync(text);
        GenerationResult fromImage = await Dev.GenerateAsync(text with { Image = Gradient(64, 48), Strength = 1.0 });
        Assert.Equal(plain.FinalLatents, fromImage.FinalLatents);
    }

    [Fact]
    public async Task The_image_shows_through_and_progress_counts_the_steps_that_run()
    {
        RgbImage image = Gradient(64, 48);
        var steps = new List<int>();
        var progress = new Recorder(r =>
        {
            if (r.Stage == GenerationStage.Denoising)
            {
                steps.Add(r.Step);
                Assert.Equal(3, r.TotalSteps);
            }
        });
        GenerationResult light = await Dev.GenerateAsync(Request(image) with { Strength = 0.3, Steps = 10 }, progress);
        Assert.Equal([1, 2, 3], steps);
        Assert.Equal(3, light.Timings.Steps);

        // The less strength, the closer the result stays to the input (the tiny autoencoder is random, so compare
        // against its own reconstruction of the image rather than the image itself).
        GenerationResult heavy = await Dev.GenerateAsync(Request(image) with { Strength = 1.0, Steps = 10 });
        GenerationResult faint = await Dev.GenerateAsync(Request(image) with { Strength = 0.05, Steps = 20 });
        float[] x0 = Dev.Autoencoder.Encode(Images.FromRgb8(image.Rgb, 64, 48), 1, 48, 64);
        double faintDistance = FluxGoldenCase.RelativeL2(faint.FinalLatents, x0);
        double heavyDistance = FluxGoldenCase.RelativeL2(heavy.FinalLatents, x0);
        Assert.True(faintDistance < 0.5 * heavyDistance, $"strength 0.05: {faintDistance:F3}, strength 1: {heavyDistance:F3}");
    }

    [Fact]
    public async Task An_image_to_image_request_shares_steps_with_a_text_to_image_one_and_both_match_alone()
    {
        GenerationRequest img2img = Request(Gradient(64, 48)) with { Strength = 0.5, Steps = 6, Seed = 3 };
        GenerationRequest text = pipelines.Request(Dev, seed: 4) with { Steps = 4, ReturnLatents = true };
        Task<GenerationResult> a, b;
        using (var release = new ManualResetEventSlim())
        {
            var running = new TaskCompletionSource();
            using var cancel = new CancellationTokenSource();
            Task<GenerationResult> blocker = Dev.GenerateAsync(pipelines.Request(Dev) with { Width = 160, Height = 32, Steps = 50 },
                new Recorder(_ =>
                {
                    running.TrySetResult();
                    release.Wait(TimeSpan.FromSeconds(60));
                }), cancel.Token);
            await running.Task.WaitAsync(TimeSpan.FromSeconds(30));
            a = Dev.GenerateAsync(img2img);
            b = Dev.GenerateAsync(text);
            Assert.True(SpinWait.SpinUntil(() => Dev.AllWaitingReady, TimeSpan.FromSeconds(30)));
            cancel.Cancel();
            release.Set();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => blocker);
        }

        GenerationResult[] both = await Task.WhenAll(a, b);
        Assert.All(both, r => Assert.Equal(2, r.PeakBatchImages));
        GenerationResult img2imgAlone = await Dev.GenerateAsync(img2img), textAlone = await Dev.GenerateAsync(text);
        Assert.True(FluxGoldenCase.RelativeL2(both[0].FinalLatents, img2imgAlone.FinalLatents!) < 1e-5);
        Assert.True(FluxGoldenCase.RelativeL2(both[1].FinalLatents, textAlone.FinalLatents!) < 1e-5);
    }

    [Fact]
    public void Resize_keeps_a_same_size_image_and_a_flat_colour()
    {
        RgbImage image = Gradient(40, 30);
        Assert.Same(image, ImageResize.Resize(image, 40, 30));
        var flat = new RgbImage(37, 23, Enumerable.Repeat(new byte[] { 200, 17, 99 }, 37 * 23).SelectMany(p => p).ToArray());
        foreach ((int w, int h) in new[] { (64, 48), (9, 5), (37, 100) })
        {
            RgbImage resized = ImageResize.Resize(flat, w, h);
            Assert.Equal((w, h, 3 * w * h), (resized.Width, resized.Height, resized.Rgb.Length));
            Assert.Equal(Enumerable.Repeat(new byte[] { 200, 17, 99 }, w * h).SelectMany(p => p), resized.Rgb);
        }

        Assert.Throws<ArgumentException>(() => ImageResize.Resize(new RgbImage(4, 4, new byte[5]), 8, 8));
    }

    [Fact]
    public void Resize_keeps_a_linear_ramp_linear_and_averages_when_it_shrinks()
    {
        // A horizontal ramp 0, 4, 8, … enlarged 2×: bilinear keeps it a ramp (half the slope) away from the edges.
        var ramp = new RgbImage(32, 4, Enumerable.Range(0, 4 * 32).SelectMany(i => Enumerable.Repeat((byte)(4 * (i % 32)), 3)).ToArray());
        RgbImage wide = ImageResize.Resize(ramp, 64, 4);
        for (int x = 2; x < 62; x++)
        {
            double want = 4 * (((x + 0.5) / 2) - 0.5);
            Assert.True(Math.Abs(wide.Rgb[3 * x] - want) <= 0.5 + 1e-9, $"x {x}: {wide.Rgb[3 * x]} vs {want}");
        }

        // A one-pixel checkerboard shrunk 4×: every output pixel averages black and white (no aliasing to either).
        var checker = new RgbImage(64, 64, Enumerable.Range(0, 64 * 64).SelectMany(i => Enumerable.Repeat((byte)(((i / 64) + (i % 64)) % 2 == 0 ? 255 : 0), 3)).ToArray());
        RgbImage small = ImageResize.Resize(checker, 16, 16);
        Assert.All(small.Rgb, v => Assert.InRange(v, 120, 135));
    }

    private GenerationRequest Request(RgbImage image) =>
        pipelines.Request(Dev) with { Image = image, ReturnLatents = true };

    /// <summary>A smooth colour image (ramps in x and y), not noise: an image the autoencoder can keep.</summary>
    private static RgbImage Gradient(int width, int height)
    {
        var rgb = new byte[3 * width * height];
        for (int y = 0; y < height; y++)
        {
            for (int x = 0; x < width; x++)
            {
                int at = 3 * ((y * width) + x);
                rgb[at] = (byte)(255 * x / Math.Max(1, width - 1));
                rgb[at + 1] = (byte)(255 * y / Math.Max(1, height - 1));
                rgb[at + 2] = (byte)(128 + (x - y));
            }
        }

        return new RgbImage(width, height, rgb);
    }

    private sealed class Recorder(Action<GenerationProgress> onReport) : IProgress<GenerationProgress>
    {
        public void Report(GenerationProgress value) => onReport(value);
    }
}
