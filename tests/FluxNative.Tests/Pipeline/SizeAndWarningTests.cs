namespace FluxNative.Tests.Pipeline;

/// <summary>
/// The sizes a pipeline accepts with its default options (multiples of 16 from 64 up, as diffusers and BFL's code),
/// and the warnings a plan carries: a side rounded, a size outside the trained range, a prompt cut short.
/// </summary>
public class SizeAndWarningTests(TinyPipelines pipelines) : IClassFixture<TinyPipelines>
{
    /// <summary>The tiny dev models with the library's default options (the fixture's allow 16-pixel sides).</summary>
    private FluxPipeline Defaults(FluxPipelineOptions? options = null) =>
        new(pipelines.Dev.Transformer, pipelines.Dev.Autoencoder, options ?? new FluxPipelineOptions(), ownsModels: false, pipelines.Dev.PromptEncoder);

    private GenerationRequest Sized(int width, int height) => pipelines.Request(pipelines.Dev) with { Width = width, Height = height };

    [Theory]
    [InlineData(64, 64)]
    [InlineData(64, 3008)]
    [InlineData(4096, 128)]
    [InlineData(16384, 64)]
    public void Any_multiple_of_16_from_64_up_is_planned_with_a_warning_outside_256_to_2048(int width, int height)
    {
        using FluxPipeline pipeline = Defaults();

        GenerationPlan plan = pipeline.Plan(Sized(width, height));

        Assert.Equal((width, height), (plan.Width, plan.Height));
        string warning = Assert.Single(plan.Warnings);
        Assert.Contains($"{width}x{height} is outside FLUX's trained range (256-2048 pixels a side)", warning);
    }

    [Theory]
    [InlineData(256, 256)]
    [InlineData(2048, 1024)]
    [InlineData(1024, 2048)]
    public void The_trained_range_plans_without_warnings(int width, int height)
    {
        using FluxPipeline pipeline = Defaults();
        Assert.Empty(pipeline.Plan(Sized(width, height)).Warnings);
    }

    [Fact]
    public void A_side_that_is_not_a_multiple_of_16_is_rounded_with_a_warning()
    {
        using FluxPipeline pipeline = Defaults();

        GenerationPlan plan = pipeline.Plan(Sized(1000, 512));

        Assert.Equal((1008, 512), (plan.Width, plan.Height));
        Assert.Equal("The width 1000 is not a multiple of 16; using 1008.", Assert.Single(plan.Warnings));
    }

    [Theory]
    [InlineData(48, 256, "width")]
    [InlineData(256, 40, "height")]
    [InlineData(16400, 256, "width")]
    public void Sides_below_64_or_above_16384_are_refused_naming_the_side(int width, int height, string field)
    {
        using FluxPipeline pipeline = Defaults();

        var e = Assert.Throws<GenerationRequestException>(() => pipeline.Plan(Sized(width, height)));

        Assert.Equal(field, e.Field);
        Assert.Contains("between 64 and 16384", e.Message);
    }

    [Fact]
    public void The_bounds_are_the_options_so_a_host_can_narrow_them()
    {
        using FluxPipeline pipeline = Defaults(new FluxPipelineOptions { MinSide = 256, MaxSide = 2048 });

        var e = Assert.Throws<GenerationRequestException>(() => pipeline.Plan(Sized(128, 256)));
        Assert.Contains("between 256 and 2048", e.Message);
        var size = Assert.Throws<GenerationRequestException>(() => pipeline.Plan(pipelines.Request(pipelines.Dev) with { Width = null, Height = null, ImageSize = 4096 }));
        Assert.Equal("image_size", size.Field);
    }

    [Fact]
    public void A_prompt_longer_than_clip_and_t5_read_is_planned_with_one_warning_for_each()
    {
        // The demo's T5 reads 64 tokens; 100 words ("cat" is one token in both) are more than either encoder reads.
        string prompt = string.Join(' ', Enumerable.Repeat("cat", 100));
        PromptEncoder encoder = pipelines.Dev.PromptEncoder!;

        GenerationPlan plan = pipelines.Dev.Plan(new GenerationRequest { Prompt = prompt, Width = 256, Height = 256 });

        Assert.Equal(
        [
            "The prompt is 100 CLIP tokens but CLIP reads 77, 75 of them the prompt's: the last 25 are cut off.",
            $"The prompt is 100 T5 tokens but T5 reads {encoder.T5MaxLength}, {encoder.T5MaxLength - 1} of them the prompt's: the last {100 - (encoder.T5MaxLength - 1)} are cut off.",
        ], plan.Warnings);
    }

    [Fact]
    public void A_prompt_that_fits_has_no_warning_and_given_embeddings_are_not_tokenized()
    {
        Assert.Empty(pipelines.Dev.Plan(new GenerationRequest { Prompt = "a red fox", Width = 256, Height = 256 }).Warnings);
        Assert.Empty(pipelines.Dev.PromptEncoder!.TruncationWarnings(string.Join(' ', Enumerable.Repeat("cat", 63))));
        Assert.Single(pipelines.Dev.PromptEncoder!.TruncationWarnings(string.Join(' ', Enumerable.Repeat("cat", 64))));
        Assert.Empty(pipelines.Dev.Plan(pipelines.Request(pipelines.Dev) with { Width = 256, Height = 256 }).Warnings);
    }
}
