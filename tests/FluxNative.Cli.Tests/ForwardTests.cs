using System.Text.RegularExpressions;
using FluxNative.Testing;

namespace FluxNative.Cli.Tests;

/// <summary><c>flux forward</c>: output, input checks with one-line errors, and timing.</summary>
public sealed partial class ForwardTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Fact]
    public void Forward_writes_out_equal_to_the_in_process_forward()
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");
        string model = golden.WriteModel(temp.Path);
        string outPath = temp.File("out.safetensors");

        CliResult result = CliRunner.Run("forward", "--model", model, "--inputs", golden.InputsPath, "--out", outPath);

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Equal(string.Empty, result.Error);
        Assert.Contains($"-> {outPath}", result.Output);
        Assert.Contains("config   dev: hidden 64, 2 heads x 32", result.Output);
        Assert.Contains("weights stored; activations f32;", result.Output);
        using Checkpoint written = Checkpoint.Open(outPath);
        TensorInfo tensor = Assert.Single(written.Tensors);
        Assert.Equal("out", tensor.Name);
        Assert.Equal(DType.F32, tensor.DType);
        Assert.Equal(new long[] { 2, 16, 64 }, tensor.Shape);

        using FluxTransformer inProcess = FluxTransformer.Load(model);
        float[] expected = inProcess.Forward(golden.ReadInputs());
        Assert.Equal(expected, written.ReadFloat32("out"));
        Assert.True(FluxGoldenCase.RelativeL2(expected, golden.ReadExpectedOutput()) <= 5e-5);
    }

    [Fact]
    public void Lora_files_are_merged_at_the_strength_given_and_bad_ones_are_one_line_errors()
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");
        string model = golden.WriteModel(temp.Path);
        string lora = temp.File("style.safetensors");
        var random = new Random(5);
        float[] Values(int n) => Enumerable.Range(0, n).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
        new SafetensorsWriter()
            .Add("lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight", Values(2 * 64), 2, 64)
            .Add("lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight", Values(192 * 2), 192, 2)
            .Write(lora);

        float[] Run(params string[] extra)
        {
            string outPath = temp.File($"out-{Guid.NewGuid():N}.safetensors");
            CliResult result = CliRunner.Run(["forward", "--model", model, "--inputs", golden.InputsPath, "--out", outPath, .. extra]);
            Assert.True(result.ExitCode == 0, result.Error);
            using Checkpoint written = Checkpoint.Open(outPath);
            return written.ReadFloat32("out");
        }

        float[] plain = Run(), full = Run("--lora", lora), twice = Run("--lora", lora + ":0.5", "--lora", lora + ":0.5");
        Assert.True(FluxGoldenCase.RelativeL2(full, plain) > 1e-3);
        Assert.True(FluxGoldenCase.RelativeL2(twice, full) < 1e-5, "two halves are the whole");

        CliResult missing = CliRunner.Run("forward", "--model", model, "--inputs", golden.InputsPath, "--out", temp.File("x.safetensors"), "--lora", temp.File("nope.safetensors"));
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("--lora: no such file", missing.Error);
        CliResult nan = CliRunner.Run("forward", "--model", model, "--inputs", golden.InputsPath, "--out", temp.File("x.safetensors"), "--lora", lora + ":NaN");
        Assert.Equal(2, nan.ExitCode);
        Assert.Contains("not a finite number", nan.Error);
    }

    [Fact]
    public void Inputs_of_any_float_dtype_are_read_as_f32()
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");
        string model = golden.WriteModel(temp.Path);
        // F64 holds every F32 value exactly, so the output must not change by a bit.
        var tensors = ReadAll(golden.InputsPath);
        var writer = new SafetensorsWriter();
        foreach ((string name, (float[] values, long[] shape)) in tensors)
        {
            writer.Add(name, values.Select(v => (double)v).ToArray(), shape);
        }

        string inputs = temp.File("inputs-f64.safetensors");
        writer.Write(inputs);

        CliResult f32 = CliRunner.Run("forward", "--model", model, "--inputs", golden.InputsPath, "--out", temp.File("f32.safetensors"));
        CliResult f64 = CliRunner.Run("forward", "--model", model, "--inputs", inputs, "--out", temp.File("f64.safetensors"));

        Assert.True(f32.ExitCode == 0, f32.Error);
        Assert.True(f64.ExitCode == 0, f64.Error);
        Assert.Equal(ReadOut(temp.File("f32.safetensors")), ReadOut(temp.File("f64.safetensors")));
    }

    [Fact]
    public void Bf16_activations_reach_the_model_and_show_in_the_run_line()
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-bf16-bfl");
        string model = golden.WriteModel(temp.Path);
        string outPath = temp.File("out.safetensors");

        CliResult result = CliRunner.Run("forward", "--model", model, "--inputs", golden.InputsPath, "--out", outPath, "--activations", "bf16");

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("weights stored; activations bf16;", result.Output);
        using (FluxTransformer inProcess = FluxTransformer.Load(model, activations: FluxActivationPrecision.Bf16))
        {
            Assert.Equal(inProcess.Forward(golden.ReadInputs()), ReadOut(outPath));
        }

        Assert.True(FluxGoldenCase.RelativeL2(ReadOut(outPath), golden.ReadExpectedOutput()) <= 1e-2);
    }

    [Fact]
    public void The_activations_option_parses_to_the_request()
    {
        Assert.Equal(FluxActivationPrecision.F32, TransformerForward.ParseActivationPrecision("f32"));
        Assert.Equal(FluxActivationPrecision.Bf16, TransformerForward.ParseActivationPrecision("bf16"));
        Assert.Throws<CliInputException>(() => TransformerForward.ParseActivationPrecision("f16"));
    }

    [Fact]
    public void Schnell_runs_without_guidance()
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("schnell-f32-diffusers");
        string model = golden.WriteModel(temp.Path);
        string outPath = temp.File("out.safetensors");

        CliResult result = CliRunner.Run("forward", "--model", model, "--inputs", golden.InputsPath, "--out", outPath, "--threads", "2");

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("config   schnell:", result.Output);
        Assert.Contains("threads: 2", result.Output);
        Assert.True(FluxGoldenCase.RelativeL2(ReadOut(outPath), golden.ReadExpectedOutput()) <= 5e-5);
    }

    [Fact]
    public void A_dev_model_without_guidance_fails_naming_the_missing_tensor()
    {
        string model = FluxGoldenCase.Load("dev-f32-bfl").WriteModel(temp.Path);
        // The schnell case's inputs are the same draws without guidance.
        string inputs = FluxGoldenCase.Load("schnell-f32-diffusers").InputsPath;
        string outPath = temp.File("out.safetensors");

        CliResult result = CliRunner.Run("forward", "--model", model, "--inputs", inputs, "--out", outPath);

        Assert.Equal(2, result.ExitCode);
        Assert.Equal($"flux: {inputs}: no tensor 'guidance'; expected guidance [B=2] (this dev model has a guidance embedder).", Assert.Single(result.ErrorLines).TrimEnd());
        Assert.False(File.Exists(outPath));
    }

    [Fact]
    public void A_missing_tensor_is_one_line_naming_file_tensor_and_expected_shape()
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");
        string model = golden.WriteModel(temp.Path);
        var tensors = ReadAll(golden.InputsPath);
        tensors.Remove("txt_ids");
        string inputs = WriteInputs("no-txt-ids.safetensors", tensors);

        CliResult result = CliRunner.Run("forward", "--model", model, "--inputs", inputs, "--out", temp.File("out.safetensors"));

        Assert.Equal(2, result.ExitCode);
        Assert.Equal($"flux: {inputs}: no tensor 'txt_ids'; expected txt_ids [B=2, Ltxt=8, 3].", Assert.Single(result.ErrorLines).TrimEnd());
    }

    public static TheoryData<string, long[], string> WrongShapes() => new()
    {
        // img decides B and Limg, so only its channels are checked against the model.
        { "img", [2, 16, 32], "img has shape [2, 16, 32] but [B, Limg, in_channels=64] is expected." },
        { "img", [32, 64], "img has shape [32, 64] but [B, Limg, in_channels=64] is expected." },
        { "txt", [2, 8, 16], "txt has shape [2, 8, 16] but [B=2, Ltxt, context_in_dim=32] is expected." },
        { "txt", [1, 8, 32], "txt has shape [1, 8, 32] but [B=2, Ltxt, context_in_dim=32] is expected." },
        { "img_ids", [2, 15, 3], "img_ids has shape [2, 15, 3] but [B=2, Limg=16, 3] is expected." },
        { "txt_ids", [2, 8, 2], "txt_ids has shape [2, 8, 2] but [B=2, Ltxt=8, 3] is expected." },
        { "y", [3, 32], "y has shape [3, 32] but [B=2, vec_in_dim=32] is expected." },
        { "timesteps", [2, 1], "timesteps has shape [2, 1] but [B=2] is expected." },
        { "guidance", [1], "guidance has shape [1] but [B=2] is expected (this dev model has a guidance embedder)." },
    };

    [Theory]
    [MemberData(nameof(WrongShapes))]
    public void A_wrong_shape_is_one_line_naming_file_tensor_shape_and_expected_shape(string tensor, long[] shape, string message)
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");
        string model = golden.WriteModel(temp.Path);
        var tensors = ReadAll(golden.InputsPath);
        long count = shape.Aggregate(1L, (a, b) => a * b);
        tensors[tensor] = (Enumerable.Range(0, (int)count).Select(i => i * 0.01f).ToArray(), shape);
        string inputs = WriteInputs($"bad-{tensor}.safetensors", tensors);

        CliResult result = CliRunner.Run("forward", "--model", model, "--inputs", inputs, "--out", temp.File("out.safetensors"));

        Assert.Equal(2, result.ExitCode);
        Assert.Equal($"flux: {inputs}: {message}", Assert.Single(result.ErrorLines).TrimEnd());
    }

    [Fact]
    public void Repeat_prints_median_min_and_max_milliseconds()
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");
        string model = golden.WriteModel(temp.Path);

        CliResult result = CliRunner.Run(
            "forward", "--model", model, "--inputs", golden.InputsPath, "--out", temp.File("out.safetensors"),
            "--repeat", "3", "--weights-dtype", "bf16");

        Assert.True(result.ExitCode == 0, result.Error);
        Match timing = MedianLine().Match(result.Output);
        Assert.True(timing.Success, result.Output);
        double median = double.Parse(timing.Groups["median"].Value, System.Globalization.CultureInfo.InvariantCulture);
        double min = double.Parse(timing.Groups["min"].Value, System.Globalization.CultureInfo.InvariantCulture);
        double max = double.Parse(timing.Groups["max"].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(median, min, max);
        Assert.Contains("3 timed runs after 1 warm-up", result.Output);
        Assert.Contains("weights bf16", result.Output);
        Assert.Contains("config   dev:", result.Output);
    }

    [Fact]
    public void The_service_times_the_number_of_runs_asked_for()
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");
        var request = new ForwardRequest(golden.WriteModel(temp.Path), golden.InputsPath, temp.File("out.safetensors"), Repeat: 4);
        using var output = new StringWriter();

        ForwardReport report = TransformerForward.Run(request, output);

        Assert.Equal(4, report.Timing!.Runs);
        Assert.Equal(2, report.Inputs.Batch);
        Assert.Equal(16, report.Inputs.ImageTokens);
        Assert.Equal(8, report.Inputs.TextTokens);
        Assert.Equal(2 * 16 * 64, report.Output.Length);
        Assert.InRange(report.Timing.MedianMilliseconds, report.Timing.MinMilliseconds, report.Timing.MaxMilliseconds);
    }

    [Theory]
    [InlineData("--repeat", "0")]
    [InlineData("--threads", "-1")]
    [InlineData("--weights-dtype", "f16")]
    [InlineData("--activations", "f16")]
    public void Bad_options_are_one_line_naming_the_option(string option, string value)
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");

        CliResult result = CliRunner.Run("forward", "--model", "m", "--inputs", golden.InputsPath, "--out", temp.File("o"), option, value);

        Assert.Equal(2, result.ExitCode);
        Assert.StartsWith($"flux: {option}", Assert.Single(result.ErrorLines));
    }

    [Fact]
    public void A_model_that_is_not_a_FLUX_transformer_is_bad_input()
    {
        string model = temp.File("ae.safetensors");
        TinyModel.Write(new TinyModelOptions { Kind = ModelKind.Autoencoder }, model);

        CliResult result = CliRunner.Run(
            "forward", "--model", model, "--inputs", FluxGoldenCase.Load("dev-f32-bfl").InputsPath, "--out", temp.File("out.safetensors"));

        Assert.Equal(2, result.ExitCode);
        Assert.StartsWith("flux: ", Assert.Single(result.ErrorLines));
    }

    private static Dictionary<string, (float[] Values, long[] Shape)> ReadAll(string path)
    {
        using Checkpoint file = Checkpoint.Open(path);
        return file.Tensors.ToDictionary(t => t.Name, t => (file.ReadFloat32(t.Name), t.Shape.ToArray()));
    }

    private static float[] ReadOut(string path)
    {
        using Checkpoint file = Checkpoint.Open(path);
        return file.ReadFloat32("out");
    }

    private string WriteInputs(string name, Dictionary<string, (float[] Values, long[] Shape)> tensors)
    {
        var writer = new SafetensorsWriter();
        foreach ((string tensor, (float[] values, long[] shape)) in tensors)
        {
            writer.Add(tensor, values, shape);
        }

        string path = temp.File(name);
        writer.Write(path);
        return path;
    }

    [GeneratedRegex(@"forward\s+median (?<median>[\d.]+) ms, min (?<min>[\d.]+) ms, max (?<max>[\d.]+) ms per forward")]
    private static partial Regex MedianLine();
}
