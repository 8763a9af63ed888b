using System.Diagnostics;
using System.Net;
using System.Text.Json;

namespace FluxNative.Server.Tests;

/// <summary>
/// The server on PostgreSQL (<c>--database postgres://…</c>), on the test server <see cref="TestPostgres"/> names: what
/// it keeps, and what a database that goes down and comes back does to requests. Skipped, with the reason, without one.
/// </summary>
public sealed class PostgresServerTests
{
    [PostgresFact]
    public async Task Predictions_outputs_and_keys_live_in_postgres_across_a_restart()
    {
        using var database = TestPostgres.Create();
        using var outputs = new FluxNative.Testing.TempDirectory();
        string id, url;
        await using (ServerHost first = await ServerHost.StartAsync(o => o with { DatabasePath = database.Address }, directory: outputs.Path))
        {
            Reply reply = await first.PostAsync("/v1/models/black-forest-labs/flux-dev/predictions", $$"""{"input":{{ServerHost.QuickInput}}}""", ("Prefer", "wait"));
            Assert.Equal("succeeded", reply.Json.GetProperty("status").GetString());
            id = reply.Json.GetProperty("id").GetString()!;
            url = reply.Json.GetProperty("output")[0].GetString()!;
        }

        Assert.False(File.Exists(Path.Combine(outputs.Path, "flux.db")), "the SQLite default was used");
        await using ServerHost second = await ServerHost.StartAsync(o => o with { DatabasePath = database.Address }, directory: outputs.Path);
        JsonElement p = (await second.GetAsync($"/v1/predictions/{id}")).Json;
        Assert.Equal("succeeded", p.GetProperty("status").GetString());
        Assert.Equal(url, p.GetProperty("output")[0].GetString());   // the URL-signing key is the database's
        Assert.Equal(id, (await second.GetAsync("/v1/predictions")).Json.GetProperty("results")[0].GetProperty("id").GetString());
        using HttpResponseMessage file = await second.Client.GetAsync(url);
        Assert.Equal(HttpStatusCode.OK, file.StatusCode);
    }

    [PostgresFact]
    public async Task A_database_that_goes_down_fails_requests_fast_with_503_and_the_reason_and_the_server_recovers_when_it_returns()
    {
        using var database = TestPostgres.Create();
        await using ServerHost server = await ServerHost.StartAsync(o => o with { DatabasePath = database.Address });
        string before = await server.CreateAsync(ServerHost.QuickInput);
        Assert.Equal("succeeded", (await server.WaitFinishedAsync(before)).GetProperty("status").GetString());

        TestPostgres.Control("stop -m immediate");
        try
        {
            var clock = Stopwatch.StartNew();
            Reply refused = await server.PostAsync("/v1/models/black-forest-labs/flux-dev/predictions", $$"""{"input":{{ServerHost.QuickInput}}}""");
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"the create took {clock.Elapsed} to fail");
            refused.AssertError(HttpStatusCode.ServiceUnavailable, "could not be stored, so it was not accepted");
            Assert.Contains("the database server", refused.Json.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
            Assert.True(refused.Headers.RetryAfter is not null, "no Retry-After");
            (await server.GetAsync($"/v1/predictions/{before}")).AssertError(HttpStatusCode.ServiceUnavailable, "cannot be read now");

            Reply ready = await StorageFaultTests.WaitReadinessAsync(server, HttpStatusCode.ServiceUnavailable);
            Assert.Equal("storage_unavailable", ready.Json.GetProperty("status").GetString());
            Assert.Contains(database.Name, ready.Json.GetProperty("error").GetString(), StringComparison.Ordinal);
        }
        finally
        {
            TestPostgres.Control("start");
        }

        await StorageFaultTests.WaitReadinessAsync(server, HttpStatusCode.OK);
        string after = await server.CreateAsync(ServerHost.QuickInput);
        Assert.Equal("succeeded", (await server.WaitFinishedAsync(after)).GetProperty("status").GetString());
        Assert.Equal("succeeded", (await server.GetAsync($"/v1/predictions/{before}")).Json.GetProperty("status").GetString());
    }
}
