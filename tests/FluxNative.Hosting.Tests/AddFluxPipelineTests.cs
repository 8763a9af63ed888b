using FluxNative.Hosting;
using FluxNative.Testing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Options;

namespace FluxNative.Hosting.Tests;

/// <summary><c>services.AddFluxPipeline(...)</c>: configuration binding, the hosted lifetime, logging through the host.</summary>
public class AddFluxPipelineTests
{
    [Fact]
    public void Options_bind_from_configuration()
    {
        IConfiguration configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["FluxPipeline:ModelDirectory"] = "/models/FLUX.1-dev",
            ["FluxPipeline:Device"] = "cuda:1",
            ["FluxPipeline:TransformerWeights"] = "Fp8",
            ["FluxPipeline:MaxBatchImages"] = "4",
            ["FluxPipeline:Loras:0"] = "/loras/a.safetensors:0.5",
            ["FluxPipeline:WaitForLoadOnStart"] = "true",
        }).Build();
        using ServiceProvider services = new ServiceCollection()
            .AddFluxPipeline(configuration.GetSection(FluxPipelineHostOptions.SectionName), o => o.Threads = 2)
            .BuildServiceProvider();

        FluxPipelineHostOptions options = services.GetRequiredService<IOptions<FluxPipelineHostOptions>>().Value;
        FluxPipelineOptions pipeline = options.ToPipelineOptions();

        Assert.Equal("/models/FLUX.1-dev", options.ToSources().ModelDirectory);
        Assert.True(options.WaitForLoadOnStart);
        Assert.Equal(FluxDevice.Cuda(1), pipeline.Device);
        Assert.Equal(FluxWeightFormat.Fp8, pipeline.TransformerWeights);
        Assert.Equal(4, pipeline.MaxBatchImages);
        Assert.Equal(2, pipeline.Threads);                 // the code's configure runs after the binding
        Assert.Equal([new FluxLora("/loras/a.safetensors", 0.5f)], pipeline.Loras);
    }

    [Fact]
    public async Task Settings_that_make_no_sense_fail_the_load_naming_the_field()
    {
        using ServiceProvider services = new ServiceCollection().AddFluxPipeline(o => { o.Demo = true; o.Device = "tpu"; }).BuildServiceProvider();
        FluxPipelineService flux = services.GetRequiredService<FluxPipelineService>();

        var error = await Assert.ThrowsAsync<GenerationRequestException>(() => flux.GetPipelineAsync());

        Assert.Equal("device", error.Field);
        Assert.Same(error, flux.LoadError);
        Assert.False(flux.IsReady);
    }

    [Fact]
    public async Task The_host_loads_the_pipeline_at_start_logs_through_its_loggers_and_frees_it_at_shutdown()
    {
        using var demo = new TempDirectory();
        var logs = new FakeLogCollector();
        HostApplicationBuilder builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders().AddProvider(new FakeLoggerProvider(logs));
        builder.Services.AddFluxPipeline(o =>
        {
            o.Demo = true;
            o.DemoDirectory = demo.Path;
            o.WaitForLoadOnStart = true;   // so that the pipeline is there when StartAsync returns
        });

        FluxPipeline pipeline;
        using (IHost host = builder.Build())
        {
            await host.StartAsync();
            FluxPipelineService flux = host.Services.GetRequiredService<FluxPipelineService>();
            Assert.True(flux.IsReady);
            Assert.Equal((FluxComponent.T5TextEncoder, true), (flux.LoadProgress!.Component, flux.LoadProgress.Done));
            pipeline = flux.Pipeline!;

            GenerationResult result = await flux.GenerateAsync(new GenerationRequest { Prompt = "a kite", Width = 64, Height = 64, Steps = 2, Seed = 3 });
            Assert.Equal(3 * 64 * 64, result.Images[0].Rgb.Length);
            await host.StopAsync();
        }

        // Disposing the host disposed the pipeline: it takes no more requests.
        Assert.Throws<ObjectDisposedException>(() => { _ = pipeline.GenerateAsync(new GenerationRequest { Prompt = "a kite", Width = 64, Height = 64 }); });
        IReadOnlyList<FakeLogRecord> records = logs.GetSnapshot();
        Assert.Contains(records, r => r.Category == typeof(FluxPipeline).FullName && r.Message.StartsWith("Loaded Transformer from ", StringComparison.Ordinal));
        Assert.Contains(records, r => r.Category == typeof(FluxPipeline).FullName && r.Level == LogLevel.Information
            && r.Message.StartsWith("Generated 1 image(s) 64x64, 2 steps, seed 3", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Without_waiting_the_host_starts_at_once_and_requests_wait_for_the_load()
    {
        using var demo = new TempDirectory();
        using ServiceProvider services = new ServiceCollection().AddFluxPipeline(o => { o.Demo = true; o.DemoDirectory = demo.Path; }).BuildServiceProvider();
        FluxPipelineService flux = services.GetRequiredService<FluxPipelineService>();
        IHostedService hosted = Assert.Single(services.GetServices<IHostedService>());
        Assert.Same(flux, hosted);

        await hosted.StartAsync(CancellationToken.None);   // returns before the load is done
        GenerationResult result = await flux.GenerateAsync(new GenerationRequest { Prompt = "a kite", Width = 64, Height = 64, Steps = 1 });

        Assert.Single(result.Images);
        Assert.True(flux.IsReady);
        await services.DisposeAsync();
        Assert.Throws<ObjectDisposedException>(() => { _ = flux.GetPipelineAsync(); });
    }
}
