using FluxNative.Testing;
using Xunit.Abstractions;

namespace FluxNative.Tests.Pipeline;

/// <summary>
/// The whole pipeline after the text encoders (schedule, packing, Euler loop, unpacking, decoder, 8-bit
/// conversion, PNG), and image-to-image (encoder, start step, mixing), against native/tests/data/pipeline: an
/// independent float64 NumPy reference written from docs/flux-model.md §4, §6, §7 (provenance in that folder's
/// README). Given latents and prompt embeddings, so no random number generator is involved.
/// </summary>
public sealed class PipelineGoldenTests(ITestOutputHelper log) : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Theory]
    [InlineData("dev")]
    [InlineData("schnell")]
    [InlineData("dev-img2img")]   // image-to-image: the input image encoded and mixed in at step ⌊(1 − 0.6)·5⌋ = 2
    public async Task Final_latents_and_pixels_match_the_reference(string name)
    {
        string folder = Path.Combine(RepoPaths.Root, "native", "tests", "data", "pipeline", name);
        using Checkpoint inputs = Checkpoint.Open(Path.Combine(folder, "inputs.safetensors"));
        using Checkpoint expected = Checkpoint.Open(Path.Combine(folder, "expected.safetensors"));
        IReadOnlyDictionary<string, string> meta = expected.Describe().Metadata;

        using FluxPipeline pipeline = new(
            FluxTransformer.Load(WriteModel(meta["flux_model_params"], "flux")),
            Autoencoder.Load(WriteModel(meta["ae_model_params"], "ae")),
            new FluxPipelineOptions { MinSide = 16 });

        int batch = int.Parse(meta["batch"]), steps = int.Parse(meta["steps"]), tokens = int.Parse(meta["txt_tokens"]);
        var request = new GenerationRequest
        {
            PromptEmbeddings = new PromptEmbeddings(inputs.ReadFloat32("txt"), inputs.ReadFloat32("y"), batch, tokens),
            InitialLatents = inputs.ReadFloat32("latents"),
            Width = int.Parse(meta["width"]),
            Height = int.Parse(meta["height"]),
            Steps = steps,
            Guidance = meta["guidance"] == "none" ? null : double.Parse(meta["guidance"], System.Globalization.CultureInfo.InvariantCulture),
            NumImages = batch,
            OutputFormat = ImageFormat.Png,
            ReturnLatents = true,
        };
        if (meta["strength"] != "none")
        {
            request = request with
            {
                Image = new RgbImage(request.Width!.Value, request.Height!.Value, inputs.ReadRaw("image")),
                Strength = double.Parse(meta["strength"], System.Globalization.CultureInfo.InvariantCulture),
            };
            Assert.Equal(int.Parse(meta["start_step"]), pipeline.Plan(request).StartStep);
        }

        // The schedule the pipeline will use is the reference's.
        double[] schedule = FluxSchedule.Timesteps(steps, pipeline.Plan(request).ImageTokens, pipeline.Variant == FluxVariant.Dev);
        double[] wantSchedule = ReadF64(expected, "schedule");
        Assert.Equal(wantSchedule.Length, schedule.Length);
        for (int i = 0; i < schedule.Length; i++)
        {
            Assert.True(Math.Abs(schedule[i] - wantSchedule[i]) < 1e-12, $"schedule[{i}] {schedule[i]} vs {wantSchedule[i]}");
        }

        GenerationResult result = await pipeline.GenerateAsync(request);
        double latentError = FluxGoldenCase.RelativeL2(result.FinalLatents, expected.ReadFloat32("final_latents"));
        log.WriteLine($"{name}: final latents rel. L2 {latentError:E2}");
        Assert.True(latentError <= 5e-5, $"{name}: final latents rel. L2 {latentError:E2} (bound 5e-5)");

        // 8-bit pixels: rounding (the default) and truncation, each within one level of the reference's.
        foreach ((PixelRounding rounding, string tensor) in new[] { (PixelRounding.Round, "rgb_round"), (PixelRounding.Truncate, "rgb_truncate") })
        {
            GenerationResult run = rounding == PixelRounding.Round ? result : await pipeline.GenerateAsync(request with { Rounding = rounding });
            byte[] want = expected.ReadRaw(tensor);
            int perImage = want.Length / batch, off = 0, maxOff = 0;
            for (int k = 0; k < batch; k++)
            {
                RgbImage image = Images.Decode(run.Images[k].Bytes, out ImageFormat format);
                Assert.Equal(ImageFormat.Png, format);
                Assert.Equal((request.Width!.Value, request.Height!.Value), (image.Width, image.Height));
                for (int i = 0; i < perImage; i++)
                {
                    int d = Math.Abs(image.Rgb[i] - want[k * perImage + i]);
                    maxOff = Math.Max(maxOff, d);
                    off += d > 0 ? 1 : 0;
                }
            }

            log.WriteLine($"{name} {tensor}: {off} of {want.Length} values one level off");
            Assert.True(maxOff <= 1, $"{name} {tensor}: a pixel is {maxOff} levels off");
            Assert.True(off <= want.Length / 100, $"{name} {tensor}: {off} of {want.Length} values off by one");
        }
    }

    private string WriteModel(string parametersJson, string name)
    {
        string path = temp.File($"{name}.safetensors");
        TinyModel.Write(FluxGoldenCase.TinyModelOptionsFromParams(parametersJson), path);
        return path;
    }

    private static double[] ReadF64(Checkpoint file, string name)
    {
        byte[] raw = file.ReadRaw(name);
        var values = new double[raw.Length / 8];
        Buffer.BlockCopy(raw, 0, values, 0, raw.Length);
        return values;
    }
}
