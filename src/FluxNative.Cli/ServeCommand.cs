using System.CommandLine;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging;
using FluxNative.Server;

namespace FluxNative.Cli;

/// <summary>
/// <c>flux serve [--urls URL] (--demo | --model DIR | --transformer P --ae P) [options]</c>: the HTTP server
/// (<see cref="FluxServer"/>) with OpenAI's images API and Replicate's predictions API. Declares the options only.
/// </summary>
internal static class ServeCommand
{
    public static Command Create(CliConsole console)
    {
        var urls = new Option<string>("--urls") { Description = "Addresses to listen on, separated by ';' (port 0: any free port).", DefaultValueFactory = _ => "http://127.0.0.1:8080" };
        urls.Validators.Add(result =>
        {
            string[] list = SplitUrls(result.GetValueOrDefault<string>());
            string? problem = list.Length == 0 ? "give at least one address." : list.Select(FluxServer.CheckUrl).FirstOrDefault(p => p is not null);
            if (problem is not null)
            {
                result.AddError($"--urls: {problem}");
            }
        });
        var demo = new Option<bool>("--demo") { Description = "Serve the demo's tiny random models; prompts become random embeddings (the images are noise)." };
        var demoDir = new Option<string?>("--demo-dir") { Description = "Where --demo writes its tiny models (default: fluxnative-demo under the temp folder)." };
        var model = CliOptions.ExistingPath("--model", "A diffusers-layout model folder, or an engine file (flux build).");
        var transformer = CliOptions.ExistingPath("--transformer", "The transformer (BFL file or diffusers folder); overrides --model's.");
        var ae = CliOptions.ExistingPath("--ae", "The autoencoder (BFL ae.safetensors or diffusers vae/); overrides --model's.");
        var clip = CliOptions.ExistingPath("--clip", "The CLIP text encoder folder (tokenizer inside or in tokenizer/ beside it); overrides --model's.");
        var t5 = CliOptions.ExistingPath("--t5", "The T5 encoder folder (tokenizer inside or in tokenizer_2/ beside it); overrides --model's.");
        var modelNames = new Option<string[]>("--model-name")
        {
            Description = "A Replicate model name (owner/name) to answer to; repeat for several, the first is recorded when a request names none. " +
                "Default: the loaded variant's, black-forest-labs/flux-dev or black-forest-labs/flux-schnell. Other names are 404.",
        };
        modelNames.Validators.Add(result =>
        {
            if ((result.GetValueOrDefault<string[]>() ?? []).Select(FluxServer.CheckModelName).FirstOrDefault(e => e is not null) is { } problem)
            {
                result.AddError($"--model-name: {problem}");
            }
        });
        var database = new Option<string>("--database")
        {
            Description = "Where predictions are kept: a path (an SQLite file, for one server) or postgres://USER:PASSWORD@HOST:PORT/DATABASE (PostgreSQL, which several servers can share).", DefaultValueFactory = _ => "flux-server.db",
        };
        var role = new Option<string>("--role")
        {
            Description = "What this node does: all (take requests and run them, one node per database), api (take requests and queue them) " +
                "or worker (run queued jobs). api and worker need --database postgres://….",
            DefaultValueFactory = _ => "all",
        };
        role.AcceptOnlyFromAmong("all", "api", "worker");
        var workerId = new Option<string?>("--worker-id") { Description = "This worker's name in the queue's leases (default: host name:process id)." };
        var lease = CliOptions.Number("--lease-seconds", "How long a worker's lease on a job lasts without a heartbeat: a dead worker's jobs run again elsewhere after this long.", 0.3, 3600.0, 10.0);
        var outputDir = new Option<string>("--output-dir") { Description = "Where generated images are written.", DefaultValueFactory = _ => "flux-outputs" };
        var retention = CliOptions.Number("--retention-hours", "Hours output files are kept.", 0.001, 24.0 * 365 * 100, 24.0);
        var insecure = new Option<bool>("--insecure-no-auth") { Description = "Serve without API keys (otherwise FLUX_API_KEYS or FluxServer:ApiKeys must name at least one)." };
        var queueSize = CliOptions.Number("--queue-size", "Predictions that may wait for the pipeline; more are answered 429.", 1, 1_000_000, 32);
        var batch = CliOptions.Number("--max-batch-images", $"Images that may share one transformer step: predictions of the same size join the running batch at the next step, 1-{FluxPipeline.MaxImages} (1: one prediction at a time).", 1, FluxPipeline.MaxImages, FluxPipeline.MaxImages);
        var timeout = CliOptions.Number("--request-timeout", "Seconds a prediction may take from acceptance to result before it fails.", 0.001, 86400.0 * 365, 600.0);
        var maxBody = CliOptions.Number("--max-body-kb", "Largest request body, in KiB.", 1, 1024 * 1024, 64);
        var maxPrompt = CliOptions.Number("--max-prompt-chars", "Longest prompt, in characters.", 1, FluxPipeline.MaxPromptLength, 4000);
        int smallest = FluxPipelineOptions.DefaultMinSide, largest = FluxPipelineOptions.DefaultMaxSide;
        var minSide = CliOptions.Number<int>("--min-side",
            $"Size policy: the smallest image side a request may ask for, {smallest}-{largest} pixels (default {FluxServerOptions.DefaultMinImageSide}, FLUX's trained range; {DemoModels.MinSide} with --demo). "
            + $"Sides outside {FluxPipeline.TrainedMinSide}-{FluxPipeline.TrainedMaxSide} run with a warning in the prediction's logs.", smallest, largest);
        var maxSide = CliOptions.Number("--max-side", $"Size policy: the largest image side a request may ask for, {smallest}-{largest} pixels.", smallest, largest, FluxServerOptions.DefaultMaxImageSide);
        var privateWebhooks = new Option<bool>("--allow-private-webhooks") { Description = "Allow webhooks to loopback, link-local and private addresses (refused by default)." };
        var webhookConcurrency = CliOptions.Number("--webhook-concurrency", "Webhook requests on the wire at once, at most; more wait for a slot.", 1, 10_000, 16);
        var webhookAttempts = CliOptions.Number("--webhook-attempts", "Attempts of one webhook delivery before it is recorded as failed (a connection error, 408, 429 or 5xx is tried again).", 1, 100, 6);
        var webhookRetryDelay = CliOptions.Number("--webhook-retry-delay", "Seconds before a failed webhook's second attempt; each later wait doubles (at most 5 minutes).", 0.01, 300.0, 1.0);
        var publicUrl = new Option<string?>("--public-url") { Description = "The base of the URLs handed out (default: from each request's Host)." };
        var weights = new Option<string>("--weights-dtype") { Description = "How the transformer holds its weights: stored, f32, bf16 or fp8.", DefaultValueFactory = _ => "stored" };
        weights.AcceptOnlyFromAmong(TransformerForward.WeightFormatNames);
        var activations = new Option<string>("--activations") { Description = "Transformer activation precision: f32 or bf16.", DefaultValueFactory = _ => "f32" };
        activations.AcceptOnlyFromAmong(TransformerForward.ActivationPrecisionNames);
        var threads = CliOptions.Threads();
        var device = CliOptions.Device();
        var loras = CliOptions.Loras();

        var command = new Command("serve", "Serve FLUX over HTTP: OpenAI's POST /v1/images/generations and Replicate's predictions API.")
        {
            urls, demo, demoDir, model, transformer, ae, clip, t5, modelNames, database, role, workerId, lease, outputDir, retention, insecure, queueSize, batch, timeout, maxBody, maxPrompt, minSide, maxSide,
            privateWebhooks, webhookConcurrency, webhookAttempts, webhookRetryDelay, publicUrl, weights, activations, threads, device, loras,
        };
        command.Validators.Add(result =>
        {
            bool isDemo = result.GetValue(demo);
            if (result.TryGetValue(minSide, null, out int? given) && result.TryGetValue(maxSide, FluxServerOptions.DefaultMaxImageSide, out int high))
            {
                int low = given ?? (isDemo ? DemoModels.MinSide : FluxServerOptions.DefaultMinImageSide);
                if (low > high)
                {
                    result.AddError(result.Given(minSide) ? minSide : maxSide, $"--min-side ({low}) must not be above --max-side ({high}).");
                }
            }

            if (isDemo && (result.Given(model) || result.Given(transformer) || result.Given(ae)))
            {
                result.AddError(demo, "--demo serves its own tiny models; leave out --model, --transformer and --ae.");
            }
            else if (!isDemo && !result.Given(model) && !(result.Given(transformer) && result.Given(ae)))
            {
                result.AddError(result.Given(transformer) ? ae : result.Given(ae) ? transformer : model,
                    "No model: pass --model DIR, or --transformer PATH and --ae PATH, or --demo.");
            }

            if (result.GetValue(publicUrl) is { Length: > 0 } url && !Uri.TryCreate(url, UriKind.Absolute, out _))
            {
                result.AddError(publicUrl, $"--public-url must be an absolute URL (got '{url}').");
            }
        });
        command.SetAction(async (parsed, cancellationToken) =>
        {
            bool isDemo = parsed.GetValue(demo);
            string? modelDir = parsed.GetValue(model), transformerPath = parsed.GetValue(transformer), aePath = parsed.GetValue(ae);
            FluxPipelineOptions pipeline = (isDemo ? DemoModels.Options : new FluxPipelineOptions()) with
            {
                TransformerWeights = TransformerForward.ParseWeightFormat(parsed.GetValue(weights)!),
                Activations = TransformerForward.ParseActivationPrecision(parsed.GetValue(activations)!),
                Threads = parsed.GetValue(threads),
                Device = parsed.GetValue(device),
                Loras = parsed.GetValue(loras) ?? [],   // merged at load: every request runs with them
            };
            var options = new FluxServerOptions
            {
                Urls = SplitUrls(parsed.GetValue(urls)),
                Demo = isDemo,
                DemoDirectory = parsed.GetValue(demoDir),
                Model = (modelDir ?? transformerPath ?? aePath) is null
                    ? null
                    : new FluxPipelineSources
                    {
                        ModelDirectory = modelDir, Transformer = transformerPath, Autoencoder = aePath, Clip = parsed.GetValue(clip), T5 = parsed.GetValue(t5),
                    },
                Pipeline = pipeline,
                ModelNames = parsed.GetValue(modelNames) ?? [],
                DatabasePath = parsed.GetValue(database)!,
                Role = Enum.Parse<ServerRole>(parsed.GetValue(role)!, ignoreCase: true),
                WorkerId = parsed.GetValue(workerId),
                LeaseDuration = TimeSpan.FromSeconds(parsed.GetValue(lease)),
                OutputDirectory = parsed.GetValue(outputDir)!,
                OutputRetention = TimeSpan.FromHours(parsed.GetValue(retention)),
                InsecureNoAuth = parsed.GetValue(insecure),
                QueueSize = parsed.GetValue(queueSize),
                MaxBatchImages = parsed.GetValue(batch),
                RequestTimeout = TimeSpan.FromSeconds(parsed.GetValue(timeout)),
                MaxRequestBodyBytes = 1024L * parsed.GetValue(maxBody),
                MaxPromptLength = parsed.GetValue(maxPrompt),
                MinImageSide = parsed.GetValue(minSide),
                MaxImageSide = parsed.GetValue(maxSide),
                AllowPrivateWebhookTargets = parsed.GetValue(privateWebhooks),
                WebhookMaxConcurrency = parsed.GetValue(webhookConcurrency),
                WebhookMaxAttempts = parsed.GetValue(webhookAttempts),
                WebhookRetryDelay = TimeSpan.FromSeconds(parsed.GetValue(webhookRetryDelay)),
                PublicBaseUrl = parsed.GetValue(publicUrl),
            };

            try
            {
                await FluxServer.RunAsync(options, console.Out, LogsToStandardError, cancellationToken).ConfigureAwait(false);
            }
            catch (FluxServerConfigurationException e)
            {
                throw new CliInputException(e.Message);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                // Ctrl-C or SIGTERM: a server's normal end.
            }

            return ExitCodes.Success;
        });
        return command;
    }

    private static string[] SplitUrls(string? urls) =>
        urls?.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) ?? [];

    /// <summary>
    /// The server's logs go to standard error (standard output carries the addresses it listens on, and nothing else).
    /// The host's own report of a failed start is left out: flux says what failed, in one line.
    /// </summary>
    private static void LogsToStandardError(WebApplicationBuilder builder)
    {
        builder.Logging.AddConsole(console => console.LogToStandardErrorThreshold = LogLevel.Trace);
        builder.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.Critical);
        // "listening on" and the model's "ready" say what the host's start-up notes would.
        builder.Logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Warning);
    }
}
