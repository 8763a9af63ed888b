using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;

namespace FluxNative.Server.Tests;

/// <summary>
/// The server's store with a write fault switched on and off, thrown as SQLite throws it (an <see cref="SqliteException"/>
/// with SQLite's code and message). It stands in for faults a test cannot make for real everywhere: a full disk needs
/// a small file system (a mount, so root); reads go through untouched.
/// </summary>
internal sealed class FaultyStore(IPredictionStore inner) : IPredictionStore
{
    /// <summary>Thrown by every write (insert, update, probe, the queue's and the outbox's) while set.</summary>
    public volatile SqliteException? WriteFault;

    private int failedWrites;

    /// <summary>SQLITE_FULL, as SQLite reports a full disk.</summary>
    public static SqliteException DiskFull() => new("SQLite Error 13: 'database or disk is full'.", 13);

    /// <summary>SQLITE_READONLY, as SQLite reports a read-only database.</summary>
    public static SqliteException ReadOnly() => new("SQLite Error 8: 'attempt to write a readonly database'.", 8);

    /// <summary>Writes refused so far.</summary>
    public int FailedWrites => Volatile.Read(ref failedWrites);

    public string Location => inner.Location;

    public bool IsDeleted => inner.IsDeleted;

    /// <summary>Puts a <see cref="FaultyStore"/> in front of the server's own store.</summary>
    public static void Install(WebApplicationBuilder builder) =>
        builder.Services.AddSingleton<IPredictionStore>(provider => new FaultyStore(FluxServer.OpenStore(provider.GetRequiredService<FluxServerOptions>())));

    /// <summary>The server's <see cref="FaultyStore"/> (see <see cref="Install"/>).</summary>
    public static FaultyStore Of(ServerHost server) => (FaultyStore)server.App.Services.GetRequiredService<IPredictionStore>();

    public void Insert(PredictionView p)
    {
        Fault();
        inner.Insert(p);
    }

    public void Update(PredictionView p)
    {
        Fault();
        inner.Update(p);
    }

    public void Probe()
    {
        Fault();
        inner.Probe();
    }

    public PredictionView? Get(string id) => inner.Get(id);

    public IReadOnlyList<PredictionView> List(int limit, string? before) => inner.List(limit, before);

    public IReadOnlyList<PredictionView> Unfinished() => inner.Unfinished();

    public bool RestoreIfDeleted() => inner.RestoreIfDeleted();

    public string GetOrCreateSetting(string key, Func<string> create) => inner.GetOrCreateSetting(key, create);

    public void Enqueue(PredictionView p, string batchKey, string spec)
    {
        Fault();
        inner.Enqueue(p, batchKey, spec);
    }

    public IReadOnlyList<LeasedJob> Lease(string worker, int maxJobs, TimeSpan lease)
    {
        Fault();
        return inner.Lease(worker, maxJobs, lease);
    }

    public LeaseRenewal Renew(string worker, IReadOnlyList<LeasedJob> jobs, TimeSpan lease)
    {
        Fault();
        return inner.Renew(worker, jobs, lease);
    }

    public AbortOutcome Abort(string id, PredictionView final, IReadOnlyList<WebhookDelivery>? deliveries = null)
    {
        Fault();
        return inner.Abort(id, final, deliveries);
    }

    public bool Complete(string worker, LeasedJob job, PredictionView final, IReadOnlyList<WebhookDelivery>? deliveries = null)
    {
        Fault();
        return inner.Complete(worker, job, final, deliveries);
    }

    public QueueState Queue() => inner.Queue();

    public void AddDeliveries(IReadOnlyList<WebhookDelivery> deliveries)
    {
        Fault();
        inner.AddDeliveries(deliveries);
    }

    public IReadOnlyList<WebhookDelivery> LeaseDeliveries(string owner, int max, TimeSpan lease)
    {
        Fault();
        return inner.LeaseDeliveries(owner, max, lease);
    }

    public bool RecordDelivery(string owner, WebhookDelivery delivery, DeliveryOutcome outcome, TimeSpan retryIn, string? error)
    {
        Fault();
        return inner.RecordDelivery(owner, delivery, outcome, retryIn, error);
    }

    public OutboxState Outbox() => inner.Outbox();

    public int PruneDeliveries(TimeSpan age)
    {
        Fault();
        return inner.PruneDeliveries(age);
    }

    public Task ListenAsync(Action<string> changed, CancellationToken cancellationToken) => inner.ListenAsync(changed, cancellationToken);

    private void Fault()
    {
        if (WriteFault is { } fault)
        {
            Interlocked.Increment(ref failedWrites);
            throw fault;
        }
    }
}

/// <summary>
/// <c>flux serve --demo</c> in a child process, for faults that could kill a process (a signal): it then dies, not
/// the test host, and the test says so.
/// </summary>
internal sealed class FluxServeProcess : IAsyncDisposable
{
    private readonly StringBuilder errors = new();

    private FluxServeProcess(Process process, HttpClient client)
    {
        Process = process;
        Client = client;
    }

    public Process Process { get; }

    public HttpClient Client { get; }

    /// <summary>What the child wrote to standard error so far.</summary>
    public string Errors
    {
        get
        {
            lock (errors)
            {
                return errors.ToString();
            }
        }
    }

    /// <summary>Starts <c>flux serve --demo</c> on <paramref name="database"/> and <paramref name="outputs"/> (and <paramref name="options"/>) and waits until it is ready.</summary>
    public static async Task<FluxServeProcess> StartAsync(string database, string outputs, params string[] options)
    {
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet";
        var start = new ProcessStartInfo(dotnet)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string arg in new[]
        {
            Path.Combine(AppContext.BaseDirectory, "flux.dll"), "serve", "--demo", "--demo-dir", ServerHost.DemoDirectory,
            "--urls", "http://127.0.0.1:0", "--database", database, "--output-dir", outputs,
        }.Concat(options))
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment["FLUX_API_KEYS"] = ServerHost.Key;
        start.Environment["Logging__LogLevel__Default"] = "Warning";
        Process process = Process.Start(start)!;
        var child = new FluxServeProcess(process, new HttpClient { Timeout = TimeSpan.FromSeconds(60) });
        try
        {
            child.Client.BaseAddress = new Uri(await child.ListeningAddressAsync());
            child.Client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", ServerHost.Key);
            await child.WaitReadyAsync();
            return child;
        }
        catch
        {
            await child.DisposeAsync();
            throw;
        }
    }

    /// <summary>Asserts that the child is still running (a fault killed it otherwise: its exit code and standard error say how).</summary>
    public void AssertAlive()
    {
        if (Process.HasExited)
        {
            Assert.Fail($"flux serve exited with {Process.ExitCode} (a signal when above 128): {Errors}");
        }
    }

    public async Task WaitReadyAsync()
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            AssertAlive();
            using HttpResponseMessage ready = await Client.GetAsync("/readyz");
            if (ready.StatusCode == HttpStatusCode.OK)
            {
                return;
            }

            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), "flux serve never became ready");
            await Task.Delay(50);
        }
    }

    /// <summary>Creates a prediction (with <paramref name="wait"/>, until it is finished, which must be a success) and returns its id.</summary>
    public async Task<string> CreateAsync(string input, bool wait)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/models/black-forest-labs/flux-dev/predictions")
        {
            Content = new StringContent($$"""{"input":{{input}}}""", Encoding.UTF8, "application/json"),
        };
        if (wait)
        {
            request.Headers.Add("Prefer", "wait");
        }

        using HttpResponseMessage response = await Client.SendAsync(request);
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, text);
        JsonElement p = JsonDocument.Parse(text).RootElement;
        if (wait)
        {
            Assert.Equal("succeeded", p.GetProperty("status").GetString());
        }

        return p.GetProperty("id").GetString()!;
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        if (!Process.HasExited)
        {
            Process.Kill(entireProcessTree: true);
        }

        await Process.WaitForExitAsync();
        Process.Dispose();
    }

    private async Task<string> ListeningAddressAsync()
    {
        Process.ErrorDataReceived += (_, e) =>
        {
            lock (errors)
            {
                errors.AppendLine(e.Data);
            }
        };
        Process.BeginErrorReadLine();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (await Process.StandardOutput.ReadLineAsync(timeout.Token) is { } line)
        {
            if (line.StartsWith("listening on ", StringComparison.Ordinal))
            {
                // Keep draining standard output so the child never blocks on a full pipe.
                _ = Process.StandardOutput.ReadToEndAsync(CancellationToken.None);
                return line["listening on ".Length..].Trim();
            }
        }

        throw new InvalidOperationException($"flux serve exited ({(Process.HasExited ? Process.ExitCode : -1)}) before listening: {Errors}");
    }
}
