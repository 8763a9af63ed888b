using System.CommandLine;
using System.Globalization;
using FluxNative.Server;

namespace FluxNative.Cli;

/// <summary>
/// <c>flux serve [--urls URL] (--demo | --model DIR | --transformer P --ae P) [options]</c>: the HTTP server
/// (<see cref="FluxServer"/>) with OpenAI's images API and Replicate's predictions API. Declares the options only.
/// </summary>
internal static class ServeCommand
{
    public static Command Create(TextWriter output)
    {
        var urls = new Option<string>("--urls") { Description = "Addresses to listen on, separated by ';' (port 0: any free port).", DefaultValueFactory = _ => "http://127.0.0.1:8080" };
        var demo = new Option<bool>("--demo") { Description = "Serve the demo's tiny random models; prompts become random embeddings (the images are noise)." };
        var demoDir = new Option<string?>("--demo-dir") { Description = "Where --demo writes its tiny models (default: fluxnative-demo under the temp folder)." };
        var model = new Option<string?>("--model") { Description = "A diffusers-layout model folder." };
        var transformer = new Option<string?>("--transformer") { Description = "The transformer (BFL file or diffusers folder); overrides --model's." };
        var ae = new Option<string?>("--ae") { Description = "The autoencoder (BFL ae.safetensors or diffusers vae/); overrides --model's." };
        var clip = new Option<string?>("--clip") { Description = "The CLIP text encoder folder (tokenizer inside or in tokenizer/ beside it); overrides --model's." };
        var t5 = new Option<string?>("--t5") { Description = "The T5 encoder folder (tokenizer inside or in tokenizer_2/ beside it); overrides --model's." };
        var database = new Option<string>("--database") { Description = "The SQLite database of predictions.", DefaultValueFactory = _ => "flux-server.db" };
        var outputDir = new Option<string>("--output-dir") { Description = "Where generated images are written.", DefaultValueFactory = _ => "flux-outputs" };
        var retention = new Option<double>("--retention-hours") { Description = "Hours output files are kept.", DefaultValueFactory = _ => 24 };
        var insecure = new Option<bool>("--insecure-no-auth") { Description = "Serve without API keys (otherwise FLUX_API_KEYS or FluxServer:ApiKeys must name at least one)." };
        var queueSize = new Option<int>("--queue-size") { Description = "Predictions that may wait for the pipeline; more are answered 429.", DefaultValueFactory = _ => 32 };
        var batch = new Option<int>("--max-batch-images") { Description = "Images one pipeline run may batch from compatible waiting predictions (1: no batching).", DefaultValueFactory = _ => FluxPipeline.MaxImages };
        var timeout = new Option<double>("--request-timeout") { Description = "Seconds a prediction may take from acceptance to result before it fails.", DefaultValueFactory = _ => 600 };
        var maxBody = new Option<int>("--max-body-kb") { Description = "Largest request body, in KiB.", DefaultValueFactory = _ => 64 };
        var maxPrompt = new Option<int>("--max-prompt-chars") { Description = "Longest prompt, in characters.", DefaultValueFactory = _ => 4000 };
        var privateWebhooks = new Option<bool>("--allow-private-webhooks") { Description = "Allow webhooks to loopback, link-local and private addresses (refused by default)." };
        var publicUrl = new Option<string?>("--public-url") { Description = "The base of the URLs handed out (default: from each request's Host)." };
        var weights = new Option<string>("--weights-dtype") { Description = "How the transformer holds its weights: stored, f32, bf16 or fp8.", DefaultValueFactory = _ => "stored" };
        weights.AcceptOnlyFromAmong(TransformerForward.WeightFormatNames);
        var activations = new Option<string>("--activations") { Description = "Transformer activation precision: f32 or bf16.", DefaultValueFactory = _ => "f32" };
        activations.AcceptOnlyFromAmong(TransformerForward.ActivationPrecisionNames);
        var threads = new Option<int>("--threads") { Description = "Native threads; 0 for one per core.", DefaultValueFactory = _ => 0 };

        var command = new Command("serve", "Serve FLUX over HTTP: OpenAI's POST /v1/images/generations and Replicate's predictions API.")
        {
            urls, demo, demoDir, model, transformer, ae, clip, t5, database, outputDir, retention, insecure, queueSize, batch, timeout, maxBody, maxPrompt, privateWebhooks, publicUrl,
            weights, activations, threads,
        };
        command.SetAction(async (parsed, cancellationToken) =>
        {
            bool isDemo = parsed.GetValue(demo);
            string? modelDir = parsed.GetValue(model), transformerPath = parsed.GetValue(transformer), aePath = parsed.GetValue(ae);
            FluxPipelineOptions pipeline = (isDemo ? DemoModels.Options : new FluxPipelineOptions()) with
            {
                TransformerWeights = TransformerForward.ParseWeightFormat(parsed.GetValue(weights)!),
                Activations = TransformerForward.ParseActivationPrecision(parsed.GetValue(activations)!),
                Threads = parsed.GetValue(threads),
            };
            var options = new FluxServerOptions
            {
                Urls = parsed.GetValue(urls)!.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                Demo = isDemo,
                DemoDirectory = parsed.GetValue(demoDir),
                Model = (modelDir ?? transformerPath ?? aePath) is null
                    ? null
                    : new FluxPipelineSources
                    {
                        ModelDirectory = modelDir, Transformer = transformerPath, Autoencoder = aePath, Clip = parsed.GetValue(clip), T5 = parsed.GetValue(t5),
                    },
                Pipeline = pipeline,
                DatabasePath = parsed.GetValue(database)!,
                OutputDirectory = parsed.GetValue(outputDir)!,
                OutputRetention = Hours(parsed.GetValue(retention), "--retention-hours"),
                InsecureNoAuth = parsed.GetValue(insecure),
                QueueSize = parsed.GetValue(queueSize),
                MaxBatchImages = parsed.GetValue(batch),
                RequestTimeout = Seconds(parsed.GetValue(timeout), "--request-timeout"),
                MaxRequestBodyBytes = 1024L * parsed.GetValue(maxBody),
                MaxPromptLength = parsed.GetValue(maxPrompt),
                AllowPrivateWebhookTargets = parsed.GetValue(privateWebhooks),
                PublicBaseUrl = parsed.GetValue(publicUrl),
            };

            try
            {
                await FluxServer.RunAsync(options, output, null, cancellationToken).ConfigureAwait(false);
            }
            catch (FluxServerConfigurationException e)
            {
                throw new CliInputException(e.Message);
            }

            return ExitCodes.Success;
        });
        return command;
    }

    private static TimeSpan Seconds(double value, string option) => value > 0 && double.IsFinite(value)
        ? TimeSpan.FromSeconds(value)
        : throw new CliInputException(string.Create(CultureInfo.InvariantCulture, $"{option} must be a positive number of seconds (got {value})."));

    private static TimeSpan Hours(double value, string option) => value > 0 && double.IsFinite(value)
        ? TimeSpan.FromHours(value)
        : throw new CliInputException(string.Create(CultureInfo.InvariantCulture, $"{option} must be a positive number of hours (got {value})."));
}
