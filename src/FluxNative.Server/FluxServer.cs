using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using System.Diagnostics.Metrics;

namespace FluxNative.Server;

/// <summary>
/// The FluxNative HTTP server: OpenAI's <c>POST /v1/images/generations</c>, Replicate's predictions API, health,
/// readiness and metrics, over one <see cref="FluxPipeline"/>. <c>flux serve</c> hosts it; tests build it directly.
/// </summary>
/// <example><code>
/// await using WebApplication app = FluxServer.Build(new FluxServerOptions { Demo = true, InsecureNoAuth = true });
/// await app.RunAsync();
/// </code></example>
public static class FluxServer
{
    /// <summary>The configuration key of API keys (comma-separated), besides <c>FLUX_API_KEYS</c>.</summary>
    public const string ApiKeysSetting = "FluxServer:ApiKeys";

    /// <summary>
    /// Builds the server: checks the settings, opens the database, marks the predictions a crash left unfinished as
    /// failed, and maps the endpoints. The model loads in the background once the app starts (<c>/readyz</c>).
    /// </summary>
    /// <param name="options">The settings.</param>
    /// <param name="configure">Changes to the builder before it builds (a test host, logging).</param>
    /// <exception cref="FluxServerConfigurationException">No API key without <see cref="FluxServerOptions.InsecureNoAuth"/>, no model, a bad setting or database.</exception>
    public static WebApplication Build(FluxServerOptions options, Action<WebApplicationBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        Check(options);
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        IReadOnlyList<string> keys = ApiKeys(options, builder.Configuration);
        if (keys.Count == 0 && !options.InsecureNoAuth)
        {
            throw new FluxServerConfigurationException(
                "No API key is configured: set FLUX_API_KEYS=KEY1,KEY2 (or FluxServer:ApiKeys in the configuration), " +
                "or pass --insecure-no-auth to serve without authentication.");
        }

        builder.WebHost.UseUrls([.. options.Urls]);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = options.MaxRequestBodyBytes;
            kestrel.Limits.MaxRequestHeadersTotalSize = 32 * 1024;
        });
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = TimeSpan.FromSeconds(15));

        IServiceCollection services = builder.Services;
        services.AddSingleton(options);
        services.AddSingleton(_ => OpenStore(options));
        services.AddSingleton<StorageMonitor>();
        services.AddSingleton<OutputFiles>();
        services.AddSingleton(_ => new WebhookTargets(options));
        services.AddSingleton<WebhookDispatcher>();
        services.AddSingleton(provider => new ServerMetrics(provider.GetRequiredService<IMeterFactory>()));
        services.AddSingleton(provider => new ApiKeyAuthentication(keys, options.InsecureNoAuth, provider.GetRequiredService<OutputFiles>()));
        services.AddSingleton<ModelHost>();
        services.AddSingleton<ServedModel>();
        services.AddSingleton<PredictionService>();
        services.AddSingleton<RetentionSweeper>();
        services.AddHostedService(provider => provider.GetRequiredService<ModelHost>());
        // Before the prediction service: hosted services stop in reverse, so the sender still runs while it drains.
        services.AddHostedService(provider => provider.GetRequiredService<WebhookDispatcher>());
        services.AddHostedService(provider => provider.GetRequiredService<PredictionService>());
        services.AddHostedService(provider => provider.GetRequiredService<RetentionSweeper>());
        services.AddHostedService(provider => provider.GetRequiredService<StorageMonitor>());
        if (options.Role == ServerRole.Worker)
        {
            services.AddSingleton<QueueWorker>();
            services.AddHostedService(provider => provider.GetRequiredService<QueueWorker>());
        }

        configure?.Invoke(builder);

        WebApplication app = builder.Build();
        try
        {
            app.Services.GetRequiredService<PredictionService>().RecoverInterrupted();
        }
        catch (Exception e) when (StorageMonitor.IsStorageFault(e))
        {
            // The database opened and took a write (PredictionStore checks), but failed here: still a start-up
            // problem of the files, told in one line (no stack trace).
            string database = app.Services.GetRequiredService<IPredictionStore>().Location;
            (app as IDisposable).Dispose();
            throw new FluxServerConfigurationException($"Cannot use the database '{database}' or the output folder '{options.OutputDirectory}': {StorageMonitor.Describe(e)}");
        }
        catch
        {
            (app as IDisposable).Dispose();
            throw;
        }

        if (options.Role != ServerRole.All)
        {
            IPredictionStore store = app.Services.GetRequiredService<IPredictionStore>();
            QueueWorker? worker = options.Role == ServerRole.Worker ? app.Services.GetRequiredService<QueueWorker>() : null;
            app.Services.GetRequiredService<ServerMetrics>().ObserveSharedQueue(store.Queue, worker is null ? null : () => worker.Held);
        }

        ILogger logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("FluxNative.Server");
        if (keys.Count == 0)
        {
            logger.LogWarning("Serving WITHOUT authentication (--insecure-no-auth): anyone who can reach {Urls} can use it.", string.Join(", ", options.Urls));
        }

        app.Use((context, next) => Guard(context, next, logger));
        app.UseStatusCodePages(context => EmptyStatus(context.HttpContext));
        ApiKeyAuthentication authentication = app.Services.GetRequiredService<ApiKeyAuthentication>();
        app.Use((context, next) => authentication.InvokeAsync(context, next));
        Endpoints.Map(app, options.Role);
        return app;
    }

    /// <summary>
    /// Runs the server until <paramref name="cancellationToken"/> fires or the process is told to stop (Ctrl+C, SIGTERM).
    /// Unlike a host built with <see cref="Build"/>, which stays up answering 503 when its model fails to load, this
    /// stops and throws the load's exception: a <c>flux serve</c> whose model cannot load exits instead of serving errors.
    /// </summary>
    /// <param name="options">The settings.</param>
    /// <param name="output">Told the addresses the server listens on, one <c>listening on URL</c> line each.</param>
    /// <param name="configure">Changes to the builder before it builds (where the logs go).</param>
    /// <param name="cancellationToken">Stops the server.</param>
    /// <exception cref="FluxServerConfigurationException">A bad setting, or an address already in use.</exception>
    public static async Task RunAsync(FluxServerOptions options, TextWriter output, Action<WebApplicationBuilder>? configure = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(output);
        await using WebApplication app = Build(options, configure);
        try
        {
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (IOException e) when (e.InnerException is Microsoft.AspNetCore.Connections.AddressInUseException)
        {
            throw new FluxServerConfigurationException($"{e.Message} Pick another address with --urls (port 0: any free port).");
        }

        foreach (string address in Addresses(app))
        {
            await output.WriteLineAsync($"listening on {address}").ConfigureAwait(false);
        }

        await output.FlushAsync(cancellationToken).ConfigureAwait(false);
        Task shutdown = app.WaitForShutdownAsync(cancellationToken);
        Task<FluxPipeline> ready = app.Services.GetRequiredService<ModelHost>().WaitReadyAsync(CancellationToken.None);
        if (await Task.WhenAny(shutdown, ready).ConfigureAwait(false) == ready && ready.IsFaulted)
        {
            await app.StopAsync(CancellationToken.None).ConfigureAwait(false);
            await ready.ConfigureAwait(false);   // throws the load's exception
        }

        await shutdown.ConfigureAwait(false);
    }

    /// <summary>
    /// Why <paramref name="url"/> cannot be listened on, or null when it can: Kestrel's own address syntax
    /// (<c>http://HOST:PORT</c>, <c>https://…</c>, <c>http://*:PORT</c>, <c>http://unix:/PATH</c>).
    /// </summary>
    public static string? CheckUrl(string url)
    {
        ArgumentNullException.ThrowIfNull(url);
        try
        {
            BindingAddress address = BindingAddress.Parse(url);
            return address.Scheme is "http" or "https"
                ? null
                : $"'{url}' is not an http:// or https:// address.";
        }
        catch (FormatException)
        {
            return $"'{url}' is not an address to listen on; expected http://HOST:PORT, e.g. http://127.0.0.1:8080.";
        }
    }

    /// <summary>Why <paramref name="name"/> cannot be a model name to serve (<see cref="FluxServerOptions.ModelNames"/>), or null when it can.</summary>
    public static string? CheckModelName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return ServedModel.IsModelName(name) ? null : $"'{name}' is not a model name: owner/name, each letters, digits, '.', '_' or '-'.";
    }

    /// <summary>The addresses a started server listens on (with the real port when the URL asked for port 0).</summary>
    public static IReadOnlyList<string> Addresses(WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        return app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.ToList() ?? [];
    }

    /// <summary>The store <see cref="FluxServerOptions.DatabasePath"/> names: PostgreSQL for a <c>postgres://</c> address, else an SQLite file.</summary>
    /// <exception cref="FluxServerConfigurationException">It cannot be opened, read or written.</exception>
    internal static IPredictionStore OpenStore(FluxServerOptions options) =>
        PostgresPredictionStore.IsAddress(options.DatabasePath)
            ? new PostgresPredictionStore(options.DatabasePath)
            : new PredictionStore(options.DatabasePath);

    private static void Check(FluxServerOptions options)
    {
        if (!options.Demo && options.Model is null)
        {
            throw new FluxServerConfigurationException("No model: pass --model DIR, or --transformer PATH and --ae PATH, or --demo.");
        }

        if (options.Demo && options.Model is not null)
        {
            throw new FluxServerConfigurationException("--demo serves its own tiny models; leave out --model, --transformer and --ae.");
        }

        string? badUrl = options.Urls.Select(CheckUrl).FirstOrDefault(e => e is not null);
        (bool bad, string what)[] checks =
        [
            (options.QueueSize < 1, $"The queue size must be at least 1 (got {options.QueueSize})."),
            (options.MaxBatchImages is < 1 or > FluxPipeline.MaxImages, $"The batch size must be between 1 and {FluxPipeline.MaxImages} images (got {options.MaxBatchImages})."),
            (options.RequestTimeout <= TimeSpan.Zero, "The request timeout must be positive."),
            (options.OutputRetention <= TimeSpan.Zero, "The output retention must be positive."),
            (options.MaxRequestBodyBytes < 1024, $"The body limit must be at least 1024 bytes (got {options.MaxRequestBodyBytes})."),
            (options.MaxPromptLength < 1, "The prompt limit must be at least 1 character."),
            (options.WebhookMaxAttempts < 1, "Webhook attempts must be at least 1."),
            (options.WebhookMaxConcurrency < 1, $"Concurrent webhook deliveries must be at least 1 (got {options.WebhookMaxConcurrency})."),
            (options.MaxWait < TimeSpan.FromSeconds(1), "The longest wait must be at least 1 s."),
            (options.Urls.Count == 0, "Give at least one URL to listen on."),
            (badUrl is not null, badUrl ?? string.Empty),
            (options.EffectiveMinImageSide < FluxPipelineOptions.DefaultMinSide || options.EffectiveMinImageSide > options.MaxImageSide,
                $"The smallest image side must be between {FluxPipelineOptions.DefaultMinSide} and the largest ({options.MaxImageSide}) (got {options.EffectiveMinImageSide})."),
            (options.MaxImageSide > FluxPipelineOptions.DefaultMaxSide,
                $"The largest image side must be at most {FluxPipelineOptions.DefaultMaxSide} (got {options.MaxImageSide})."),
            (string.IsNullOrWhiteSpace(options.DatabasePath), "Give a database: a path (an SQLite file) or postgres://USER:PASSWORD@HOST:PORT/DATABASE."),
            (string.IsNullOrWhiteSpace(options.OutputDirectory), "Give an output folder."),
        ];
        foreach ((bool bad, string what) in checks)
        {
            if (bad)
            {
                throw new FluxServerConfigurationException(what);
            }
        }

        if (options.ModelNames.Select(CheckModelName).FirstOrDefault(e => e is not null) is { } badName)
        {
            throw new FluxServerConfigurationException(badName);
        }

        if (options.Role != ServerRole.All && !PostgresPredictionStore.IsAddress(options.DatabasePath))
        {
            throw new FluxServerConfigurationException(
                $"--role {options.Role.ToString().ToLowerInvariant()} shares a job queue with other nodes: it needs a PostgreSQL database (--database postgres://…), not an SQLite file.");
        }

        if (options.LeaseDuration < TimeSpan.FromMilliseconds(300))
        {
            throw new FluxServerConfigurationException("The lease must be at least 0.3 s.");
        }

        if (PostgresPredictionStore.IsAddress(options.DatabasePath))
        {
            _ = PostgresPredictionStore.ConnectionSettings(options.DatabasePath);   // a bad address is told before anything starts
        }

        if (options.PublicBaseUrl is { Length: > 0 } url && !Uri.TryCreate(url, UriKind.Absolute, out _))
        {
            throw new FluxServerConfigurationException($"The public URL must be absolute (got '{url}').");
        }
    }

    private static List<string> ApiKeys(FluxServerOptions options, IConfiguration configuration)
    {
        IEnumerable<string> all = options.ApiKeys.Concat(Split(configuration[ApiKeysSetting]));
        if (options.ApiKeysFromEnvironment)
        {
            all = all.Concat(Split(Environment.GetEnvironmentVariable("FLUX_API_KEYS")));
        }

        return [.. all.Select(k => k.Trim()).Where(k => k.Length > 0).Distinct(StringComparer.Ordinal)];

        static string[] Split(string? text) => text?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) ?? [];
    }

    /// <summary>Turns every failure into a JSON error: the caller's mistakes into 4xx, a bug into a logged 500.</summary>
    private static async Task Guard(HttpContext context, RequestDelegate next, ILogger logger)
    {
        try
        {
            await next(context).ConfigureAwait(false);
        }
        catch (ApiException e) when (!context.Response.HasStarted)
        {
            await ApiErrors.Result(e).ExecuteAsync(context).ConfigureAwait(false);
        }
        catch (BadHttpRequestException e) when (!context.Response.HasStarted)
        {
            await ApiErrors.WriteAsync(context, e.StatusCode, e.StatusCode == StatusCodes.Status413PayloadTooLarge
                ? "The request body is larger than the server accepts."
                : $"Bad request: {e.Message}").ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away; there is no one to answer.
        }
        catch (Exception e) when (!context.Response.HasStarted)
        {
            logger.LogError(e, "Unhandled error on {Method} {Path}", context.Request.Method, context.Request.Path);
            await ApiErrors.WriteAsync(context, StatusCodes.Status500InternalServerError, $"Internal server error: {e.Message}").ConfigureAwait(false);
        }
    }

    private static Task EmptyStatus(HttpContext context)
    {
        int status = context.Response.StatusCode;
        string message = status switch
        {
            StatusCodes.Status404NotFound => $"No endpoint at {context.Request.Method} {context.Request.Path}.",
            StatusCodes.Status405MethodNotAllowed => $"{context.Request.Method} is not allowed on {context.Request.Path}.",
            StatusCodes.Status415UnsupportedMediaType => "The body must be JSON (Content-Type: application/json).",
            _ => $"HTTP {status}.",
        };
        return ApiErrors.WriteAsync(context, status, message);
    }
}
