using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using FluxNative.Cli;
using FluxNative.Testing;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;

namespace FluxNative.Server.Tests;

/// <summary>Authentication, health, readiness, metrics, unknown routes, and the settings a server refuses to start with.</summary>
public sealed class AuthAndHealthTests : IAsyncLifetime
{
    private ServerHost server = null!;

    public async Task InitializeAsync() => server = await ServerHost.StartAsync(o => o with { ApiKeys = [ServerHost.Key, "second-key"] });

    public async Task DisposeAsync() => await server.DisposeAsync();

    [Theory]
    [InlineData("GET", "/v1/predictions/abc")]
    [InlineData("GET", "/v1/predictions")]
    [InlineData("POST", "/v1/predictions")]
    [InlineData("POST", "/v1/models/a/b/predictions")]
    [InlineData("POST", "/v1/predictions/abc/cancel")]
    [InlineData("GET", "/v1/predictions/abc/stream")]
    [InlineData("POST", "/v1/images/generations")]
    [InlineData("GET", "/v1/webhooks/default/secret")]
    [InlineData("GET", "/metrics")]
    [InlineData("GET", "/v1/files/abc/out-0.png")]
    [InlineData("GET", "/no/such/path")]
    public async Task Every_endpoint_but_health_needs_a_valid_key(string method, string path)
    {
        foreach (AuthenticationHeaderValue? auth in new AuthenticationHeaderValue?[] { null, new("Bearer", "wrong-key"), new("Basic", "dXNlcjpwYXNz"), new("Bearer", ServerHost.Key + "x") })
        {
            using var request = new HttpRequestMessage(new HttpMethod(method), path) { Content = new StringContent("{}", Encoding.UTF8, "application/json") };
            request.Headers.Authorization = auth;
            using HttpResponseMessage response = await Anonymous().SendAsync(request);
            Reply reply = await Reply.ReadAsync(response);
            reply.AssertError(HttpStatusCode.Unauthorized, auth is null ? "Authentication required" : auth.Scheme == "Basic" ? "must be 'Bearer KEY'" : "not valid");
            Assert.Equal("Bearer", response.Headers.WwwAuthenticate.Single().Scheme);
        }
    }

    [Fact]
    public async Task Any_configured_key_and_the_token_scheme_are_accepted()
    {
        foreach (AuthenticationHeaderValue auth in new AuthenticationHeaderValue[] { new("Bearer", "second-key"), new("Token", ServerHost.Key), new("bearer", ServerHost.Key) })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/predictions");
            request.Headers.Authorization = auth;
            using HttpResponseMessage response = await Anonymous().SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
    }

    [Fact]
    public async Task Health_and_readiness_need_no_key()
    {
        HttpClient anonymous = Anonymous();
        using HttpResponseMessage health = await anonymous.GetAsync("/healthz");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        Assert.Equal("ok", JsonDocument.Parse(await health.Content.ReadAsStringAsync()).RootElement.GetProperty("status").GetString());

        using HttpResponseMessage ready = await anonymous.GetAsync("/readyz");
        JsonElement body = JsonDocument.Parse(await ready.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        Assert.Equal("ready", body.GetProperty("status").GetString());
        Assert.True(body.GetProperty("demo").GetBoolean());
        Assert.Contains("demo", body.GetProperty("model").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Unknown_routes_and_methods_answer_json()
    {
        (await server.GetAsync("/v2/everything")).AssertError(HttpStatusCode.NotFound, "No endpoint at GET /v2/everything");
        (await server.SendAsync(HttpMethod.Delete, "/v1/predictions/abc", null)).AssertError(HttpStatusCode.MethodNotAllowed, "DELETE is not allowed");
        (await server.GetAsync("/v1/images/generations")).AssertError(HttpStatusCode.MethodNotAllowed, "GET is not allowed");
    }

    [Fact]
    public async Task Metrics_count_images_steps_and_queue_on_the_meter_and_at_metrics()
    {
        var measurements = new List<(string Name, double Value)>();
        using var listener = new MeterListener();
        Meter meter = server.App.Services.GetRequiredService<ServerMetrics>().Meter;
        Assert.Equal(ServerMetrics.MeterName, meter.Name);
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (ReferenceEquals(instrument.Meter, meter))
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, _, _) => { lock (measurements) { measurements.Add((instrument.Name, value)); } });
        listener.SetMeasurementEventCallback<double>((instrument, value, _, _) => { lock (measurements) { measurements.Add((instrument.Name, value)); } });
        listener.SetMeasurementEventCallback<int>((instrument, value, _, _) => { lock (measurements) { measurements.Add((instrument.Name, value)); } });
        listener.Start();

        Reply reply = await server.PostAsync("/v1/images/generations", """{"prompt":"count me","n":2,"size":"64x64","num_inference_steps":3,"response_format":"b64_json"}""");
        Assert.Equal(HttpStatusCode.OK, reply.Status);
        listener.RecordObservableInstruments();
        lock (measurements)
        {
            Assert.Equal(2, measurements.Where(m => m.Name == "flux.images.generated").Sum(m => m.Value));
            Assert.Equal(3, measurements.Count(m => m.Name == "flux.step.duration"));
            Assert.Contains(measurements, m => m.Name == "flux.queue.length");
            Assert.Contains(measurements, m => m.Name == "flux.predictions.completed");
        }

        string text = (await server.GetAsync("/metrics")).Text;
        Assert.Contains("flux_images_generated_total 2", text, StringComparison.Ordinal);
        Assert.Contains("flux_queue_length 0", text, StringComparison.Ordinal);
        Assert.Contains("flux_step_duration_seconds_count 3", text, StringComparison.Ordinal);
        Assert.Contains("flux_predictions_completed_total{status=\"succeeded\"} 1", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Keys_are_compared_whole()
    {
        var auth = new ApiKeyAuthentication(["alpha-key", "beta-key"], insecureNoAuth: false, files: null!);
        Assert.True(auth.Matches("alpha-key"));
        Assert.True(auth.Matches("beta-key"));
        Assert.False(auth.Matches("alpha-ke"));
        Assert.False(auth.Matches("alpha-key "));
        Assert.False(auth.Matches(string.Empty));
    }

    [Fact]
    public void No_key_refuses_to_start_unless_insecure()
    {
        using var directory = new TempDirectory();
        FluxServerOptions options = ServerHost.DefaultOptions(directory.Path) with { ApiKeys = [] };
        var e = Assert.Throws<FluxServerConfigurationException>(() => FluxServer.Build(options));
        Assert.Contains("--insecure-no-auth", e.Message, StringComparison.Ordinal);

        Assert.Throws<FluxServerConfigurationException>(() => FluxServer.Build(options with { Demo = false }));
        Assert.Throws<FluxServerConfigurationException>(() => FluxServer.Build(options with { InsecureNoAuth = true, QueueSize = 0 }));
    }

    [Fact]
    public void Flux_serve_without_a_key_exits_with_bad_input()
    {
        using var directory = new TempDirectory();
        if (Environment.GetEnvironmentVariable("FLUX_API_KEYS") is { Length: > 0 })
        {
            return;   // a key from the environment would let it start
        }

        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = FluxCli.Run(["serve", "--demo", "--database", directory.File("db"), "--output-dir", directory.File("out")], output, error);
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains("No API key is configured", error.ToString(), StringComparison.Ordinal);
    }

    private HttpClient Anonymous() => new(server.App.GetTestServer().CreateHandler()) { BaseAddress = server.Client.BaseAddress };
}
