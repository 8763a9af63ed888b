namespace FluxNative.Server;

/// <summary>Everything <c>flux serve</c> can be told: where the model is, where state goes, limits and security.</summary>
public sealed record FluxServerOptions
{
    /// <summary>The addresses Kestrel listens on (default <c>http://127.0.0.1:8080</c>); port 0 picks a free port.</summary>
    public IReadOnlyList<string> Urls { get; init; } = ["http://127.0.0.1:8080"];

    /// <summary>Serve the demo's tiny random models with random prompt embeddings derived from the prompt text.</summary>
    public bool Demo { get; init; }

    /// <summary>Where the demo models are written (default: <c>fluxnative-demo</c> under the temp folder).</summary>
    public string? DemoDirectory { get; init; }

    /// <summary>The model to serve when not in demo mode.</summary>
    public FluxPipelineSources? Model { get; init; }

    /// <summary>
    /// Pipeline load settings (default: the demo's in demo mode, the pipeline's otherwise). Its size bounds are replaced
    /// by this server's size policy, <see cref="MinImageSide"/> and <see cref="MaxImageSide"/>.
    /// </summary>
    public FluxPipelineOptions? Pipeline { get; init; }

    /// <summary>The default <see cref="MinImageSide"/>: 256 pixels, the smallest side of FLUX's training images.</summary>
    public const int DefaultMinImageSide = FluxPipeline.TrainedMinSide;

    /// <summary>The default <see cref="MaxImageSide"/>: 2048 pixels, the largest side of FLUX's training images.</summary>
    public const int DefaultMaxImageSide = FluxPipeline.TrainedMaxSide;

    /// <summary>
    /// The size policy, low end: the smallest image side a request may ask for, after rounding to a multiple of 16
    /// (default null: 256, FLUX's trained range; 64 with <see cref="Demo"/>, whose tiny models are cheap at any size).
    /// At least 64, the pipeline's own minimum. A side in the policy but outside 256–2048 runs with a warning in the
    /// prediction's logs.
    /// </summary>
    public int? MinImageSide { get; init; }

    /// <summary>The size policy, high end: the largest image side a request may ask for (default 2048), at most 16384.</summary>
    public int MaxImageSide { get; init; } = DefaultMaxImageSide;

    /// <summary>The smallest side this server accepts: <see cref="MinImageSide"/>, or its default for the mode.</summary>
    public int EffectiveMinImageSide => MinImageSide ?? (Demo ? DemoModels.MinSide : DefaultMinImageSide);

    /// <summary>
    /// The Replicate model names (<c>owner/name</c>) this server answers to; the first is recorded on predictions that
    /// name no model. Default: the loaded variant's, <c>black-forest-labs/flux-dev</c> or <c>black-forest-labs/flux-schnell</c>.
    /// OpenAI's model id is the name part (<c>flux-dev</c>). A request for any other model is a 404.
    /// </summary>
    public IReadOnlyList<string> ModelNames { get; init; } = [];

    /// <summary>
    /// The database of predictions: a path, for an SQLite file (created when missing; one server per file), or a
    /// PostgreSQL address, <c>postgres://USER:PASSWORD@HOST:PORT/DATABASE</c> (tables created when missing), which
    /// several servers can share.
    /// </summary>
    public string DatabasePath { get; init; } = "flux-server.db";

    /// <summary>
    /// What this node does (default <see cref="ServerRole.All"/>): with a PostgreSQL database, API nodes take requests
    /// and queue them, worker nodes load the model and run what they lease from the queue.
    /// </summary>
    public ServerRole Role { get; init; } = ServerRole.All;

    /// <summary>This worker's name in the queue's leases (default: host name and process id).</summary>
    public string? WorkerId { get; init; }

    /// <summary>How long a worker's lease on a job lasts without a heartbeat (default 10 s; renewed every third of it): a worker that dies gives its jobs up after this long.</summary>
    public TimeSpan LeaseDuration { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The folder of generated image files, one subfolder per prediction.</summary>
    public string OutputDirectory { get; init; } = "flux-outputs";

    /// <summary>How long output files are kept (default one day); the prediction records stay.</summary>
    public TimeSpan OutputRetention { get; init; } = TimeSpan.FromDays(1);

    /// <summary>Accepted API keys (<c>Authorization: Bearer KEY</c>); merged with <c>FLUX_API_KEYS</c> and the <c>FluxServer:ApiKeys</c> setting.</summary>
    public IReadOnlyList<string> ApiKeys { get; init; } = [];

    /// <summary>Read keys from the <c>FLUX_API_KEYS</c> environment variable (comma-separated; default true).</summary>
    public bool ApiKeysFromEnvironment { get; init; } = true;

    /// <summary>Serve without authentication. Without it, a server with no key refuses to start.</summary>
    public bool InsecureNoAuth { get; init; }

    /// <summary>Predictions waiting for the pipeline, at most (default 32); more answer 429 with Retry-After.</summary>
    public int QueueSize { get; init; } = 32;

    /// <summary>
    /// Images one transformer forward may hold (default 10, <see cref="FluxPipeline.MaxImages"/>): predictions of the same size share each step, joining the
    /// running batch at a step boundary and leaving when their steps are done (the pipeline's
    /// <see cref="FluxPipelineOptions.MaxBatchImages"/>). 1 runs one prediction at a time.
    /// </summary>
    public int MaxBatchImages { get; init; } = FluxPipeline.MaxImages;

    /// <summary>A prediction that has not finished this long after it was accepted (waiting included) fails as timed out (default 10 minutes).</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>The longest <c>Prefer: wait</c> (default 60 s, as Replicate).</summary>
    public TimeSpan MaxWait { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>The largest request body in bytes (default 64 KiB).</summary>
    public long MaxRequestBodyBytes { get; init; } = 64 * 1024;

    /// <summary>The longest prompt in characters (default 4000).</summary>
    public int MaxPromptLength { get; init; } = 4000;

    /// <summary>Allow webhooks to loopback, link-local and private addresses (default false: refused, against SSRF).</summary>
    public bool AllowPrivateWebhookTargets { get; init; }

    /// <summary>
    /// The webhook signing secret, <c>whsec_</c> + base64 (Standard Webhooks). Default: <c>FLUX_WEBHOOK_SECRET</c>, else one
    /// generated once and kept in the database; <c>GET /v1/webhooks/default/secret</c> returns it.
    /// </summary>
    public string? WebhookSecret { get; init; }

    /// <summary>Deliveries of one webhook event, at most (default 6).</summary>
    public int WebhookMaxAttempts { get; init; } = 6;

    /// <summary>The first retry delay; each later one doubles (default 1 s).</summary>
    public TimeSpan WebhookRetryDelay { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>How long one webhook delivery may take (default 10 s).</summary>
    public TimeSpan WebhookTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Webhook requests on the wire at once, at most (default 16); more wait for a free slot. Keeps a burst of events, or
    /// receivers that hold each request until the timeout, from opening sockets without bound.
    /// </summary>
    public int WebhookMaxConcurrency { get; init; } = 16;

    /// <summary>The base of the URLs this server hands out (default: the scheme and host of each request).</summary>
    public string? PublicBaseUrl { get; init; }
}

/// <summary>What a <c>flux serve</c> node does.</summary>
public enum ServerRole
{
    /// <summary>Takes requests and runs them itself, in-process (one such node per database).</summary>
    All,

    /// <summary>Takes requests and puts them on the PostgreSQL job queue; runs nothing (no model loaded for running).</summary>
    Api,

    /// <summary>Loads the model and runs the jobs it leases from the PostgreSQL queue; serves health, readiness and metrics only.</summary>
    Worker,
}

/// <summary>The server cannot start with these settings (no API key, no model, a bad value); the message says why.</summary>
public sealed class FluxServerConfigurationException(string message) : Exception(message);
