using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using FluxNative.Testing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

// Generations share the machine's cores and the timing tests (cancel within a step, timeouts) read clocks: one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace FluxNative.Server.Tests;

/// <summary>A FluxServer on the demo's tiny models, in a temp folder: on the ASP.NET Core test host, or on Kestrel on loopback.</summary>
internal sealed class ServerHost : IAsyncDisposable
{
    public const string Key = "test-key-0123456789";

    /// <summary>Where the tests' demo models live (written once, shared by every server of the run).</summary>
    public static readonly string DemoDirectory = Path.Combine(Path.GetTempPath(), "fluxnative-server-tests-demo");

    /// <summary>A small fast request: 64×64, one step.</summary>
    public const string QuickInput = """{"prompt":"a red fox","image_size":64,"num_inference_steps":1}""";

    /// <summary>A long request: 1024×1024, 50 steps (about a third of a second a step here), for cancels and timeouts.</summary>
    public const string LongInput = """{"prompt":"a slow fox","image_size":1024,"num_inference_steps":50,"output_format":"png"}""";

    private readonly TempDirectory? ownedDirectory;

    private ServerHost(WebApplication app, HttpClient client, FluxServerOptions options, TempDirectory? ownedDirectory)
    {
        App = app;
        Client = client;
        Options = options;
        this.ownedDirectory = ownedDirectory;
    }

    public WebApplication App { get; }

    public HttpClient Client { get; }

    public FluxServerOptions Options { get; }

    public PredictionService Predictions => App.Services.GetRequiredService<PredictionService>();

    public static FluxServerOptions DefaultOptions(string directory) => new()
    {
        Demo = true,
        DemoDirectory = DemoDirectory,
        DatabasePath = Path.Combine(directory, "flux.db"),
        OutputDirectory = Path.Combine(directory, "outputs"),
        ApiKeys = [Key],
        ApiKeysFromEnvironment = false,
        Urls = ["http://127.0.0.1:0"],
    };

    /// <summary>
    /// Starts a server; <paramref name="directory"/> (kept) or a fresh temp folder (deleted with the host) holds its state;
    /// <paramref name="services"/> replaces services (a webhook resolver) after the server's own are registered;
    /// <paramref name="configure"/> changes the builder (a service replaced, for fault injection).
    /// </summary>
    public static async Task<ServerHost> StartAsync(
        Func<FluxServerOptions, FluxServerOptions>? change = null, bool kestrel = false, string? directory = null, Action<IServiceCollection, FluxServerOptions>? services = null,
        Action<WebApplicationBuilder>? configure = null)
    {
        TempDirectory? owned = directory is null ? new TempDirectory() : null;
        FluxServerOptions options = DefaultOptions(directory ?? owned!.Path);
        options = change?.Invoke(options) ?? options;
        WebApplication app = FluxServer.Build(options, builder =>
        {
            builder.Logging.ClearProviders();
            services?.Invoke(builder.Services, options);
            if (!kestrel)
            {
                builder.WebHost.UseTestServer();
            }

            configure?.Invoke(builder);
        });
        await app.StartAsync();
        HttpClient client = kestrel ? new HttpClient { BaseAddress = new Uri(FluxServer.Addresses(app)[0]) } : app.GetTestClient();
        client.Timeout = TimeSpan.FromSeconds(100);
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Key);
        await app.Services.GetRequiredService<ModelHost>().WaitReadyAsync().WaitAsync(TimeSpan.FromSeconds(60));
        return new ServerHost(app, client, options, owned);
    }

    public Task<Reply> PostAsync(string path, string body, params (string Name, string Value)[] headers) => SendAsync(HttpMethod.Post, path, body, headers);

    public Task<Reply> GetAsync(string path) => SendAsync(HttpMethod.Get, path, null);

    public async Task<Reply> SendAsync(HttpMethod method, string path, string? body, params (string Name, string Value)[] headers)
    {
        using var request = new HttpRequestMessage(method, path);
        if (body is not null)
        {
            request.Content = new StringContent(body, Encoding.UTF8, "application/json");
        }

        foreach ((string name, string value) in headers)
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }

        using HttpResponseMessage response = await Client.SendAsync(request);
        return await Reply.ReadAsync(response);
    }

    /// <summary>Creates a prediction through the model endpoint and returns its id.</summary>
    public async Task<string> CreateAsync(string input, string extra = "", params (string Name, string Value)[] headers)
    {
        Reply reply = await PostAsync("/v1/models/black-forest-labs/flux-dev/predictions", $$"""{"input":{{input}}{{extra}}}""", headers);
        Assert.True(reply.Status == HttpStatusCode.Created, reply.Text);
        return reply.Json.GetProperty("id").GetString()!;
    }

    /// <summary>Polls the prediction until <paramref name="done"/> holds (or the time is up, which fails).</summary>
    public async Task<JsonElement> WaitForAsync(string id, Func<JsonElement, bool> done, double seconds = 60)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            Reply reply = await GetAsync($"/v1/predictions/{id}");
            Assert.Equal(HttpStatusCode.OK, reply.Status);
            if (done(reply.Json))
            {
                return reply.Json;
            }

            if (clock.Elapsed.TotalSeconds > seconds)
            {
                Assert.Fail($"Prediction {id} did not get there in {seconds} s: {reply.Text}");
            }

            await Task.Delay(20);
        }
    }

    public Task<JsonElement> WaitFinishedAsync(string id, double seconds = 60) =>
        WaitForAsync(id, p => p.GetProperty("status").GetString() is "succeeded" or "failed" or "canceled", seconds);

    /// <summary>Waits until the prediction runs and has done at least one denoising step.</summary>
    public Task<JsonElement> WaitStepAsync(string id) =>
        WaitForAsync(id, p => p.GetProperty("status").GetString() == "processing" && p.GetProperty("logs").GetString()!.Contains("| 1/", StringComparison.Ordinal));

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
        ownedDirectory?.Dispose();
    }
}

/// <summary>A response read whole: status, headers, text, and the JSON when it is JSON.</summary>
internal sealed record Reply(HttpStatusCode Status, string Text, string? ContentType, HttpResponseHeaders Headers)
{
    public JsonElement Json => JsonDocument.Parse(Text).RootElement.Clone();

    public static async Task<Reply> ReadAsync(HttpResponseMessage response) =>
        new(response.StatusCode, await response.Content.ReadAsStringAsync(), response.Content.Headers.ContentType?.MediaType, response.Headers);

    /// <summary>Asserts a JSON error with this status whose message contains <paramref name="text"/> (and names <paramref name="field"/>).</summary>
    public void AssertError(HttpStatusCode status, string text, string? field = null)
    {
        Assert.True(status == Status, $"expected {(int)status}, got {(int)Status}: {Text}");
        Assert.Equal("application/json", ContentType);
        JsonElement error = Json.GetProperty("error");
        string message = error.GetProperty("message").GetString()!;
        Assert.Contains(text, message, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(message, Json.GetProperty("detail").GetString());
        Assert.Equal((int)status, Json.GetProperty("status").GetInt32());
        if (field is not null)
        {
            Assert.Equal(field, error.GetProperty("param").GetString());
        }
    }
}
