using FluxNative.Hosting;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;

// In the container's namespace, as the framework's own Add* methods, so that no extra using is needed to find it.
namespace Microsoft.Extensions.DependencyInjection;

/// <summary><c>services.AddFluxPipeline(...)</c>: one FLUX pipeline for the host (see <see cref="FluxPipelineService"/>).</summary>
public static class FluxPipelineServiceCollectionExtensions
{
    /// <summary>
    /// Adds <see cref="FluxPipelineService"/> (a singleton and a hosted service: it loads the pipeline when the host
    /// starts and frees it when the host stops) with options set in code.
    /// </summary>
    /// <example><code>builder.Services.AddFluxPipeline(o => { o.ModelDirectory = "/models/FLUX.1-dev"; o.Device = "cuda:0"; });</code></example>
    public static IServiceCollection AddFluxPipeline(this IServiceCollection services, Action<FluxPipelineHostOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        services.AddOptions<FluxPipelineHostOptions>().Configure(configure);
        return AddService(services);
    }

    /// <summary>
    /// Adds <see cref="FluxPipelineService"/> with options bound from <paramref name="configuration"/> (a section such
    /// as <c>builder.Configuration.GetSection("FluxPipeline")</c>), then <paramref name="configure"/> on top; the
    /// options follow <see cref="IConfiguration"/>'s usual sources (appsettings.json, environment variables, ...).
    /// </summary>
    public static IServiceCollection AddFluxPipeline(this IServiceCollection services, IConfiguration configuration, Action<FluxPipelineHostOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configuration);
        OptionsBuilder<FluxPipelineHostOptions> builder = services.AddOptions<FluxPipelineHostOptions>().Bind(configuration);
        if (configure is not null)
        {
            builder.Configure(configure);
        }

        return AddService(services);
    }

    private static IServiceCollection AddService(IServiceCollection services)
    {
        services.TryAddSingleton<FluxPipelineService>();
        // The same instance as the hosted service: the container starts it with the host and disposes it once.
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, FluxPipelineService>(sp => sp.GetRequiredService<FluxPipelineService>()));
        return services;
    }
}
