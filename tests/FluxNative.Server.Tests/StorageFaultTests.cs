using System.Diagnostics;
using System.Net;
using System.Text.Json;
using FluxNative.Testing;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace FluxNative.Server.Tests;

/// <summary>
/// Fault injection on the storage (issue 17, item 1): a full disk, a read-only database, a deleted data folder, a
/// locked database, side files truncated under a running server. Each fails only the request it concerns (503 with
/// the reason), readiness says why while it lasts, nothing accepted is lost, and the process never exits.
/// </summary>
public sealed class StorageFaultTests(ITestOutputHelper output)
{
    private const string ModelPath = "/v1/models/black-forest-labs/flux-dev/predictions";

    private static readonly string QuickBody = $$"""{"input":{{ServerHost.QuickInput}}}""";

    [Fact]
    public async Task A_full_disk_refuses_new_predictions_with_503_and_readiness_says_why_until_there_is_room()
    {
        await using ServerHost server = await ServerHost.StartAsync(configure: FaultyStore.Install);
        FaultyStore store = FaultyStore.Of(server);
        string before = await server.CreateAsync(ServerHost.QuickInput);
        await server.WaitFinishedAsync(before);

        store.WriteFault = FaultyStore.DiskFull();
        Reply refused = await server.PostAsync(ModelPath, QuickBody);
        refused.AssertError(HttpStatusCode.ServiceUnavailable, "the disk is full");
        Assert.Contains("not accepted", refused.Json.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.NotNull(refused.Headers.RetryAfter);
        Reply openAi = await server.PostAsync("/v1/images/generations", """{"prompt":"a fox","size":"64x64","num_inference_steps":1}""");
        openAi.AssertError(HttpStatusCode.ServiceUnavailable, "the disk is full");

        Reply ready = await server.GetAsync("/readyz");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.Status);
        Assert.Equal("storage_unavailable", ready.Json.GetProperty("status").GetString());
        Assert.Contains("the disk is full", ready.Json.GetProperty("error").GetString(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, (await server.GetAsync($"/v1/predictions/{before}")).Status);   // reads still work

        store.WriteFault = null;
        await WaitReadinessAsync(server, HttpStatusCode.OK);
        string after = await server.CreateAsync(ServerHost.QuickInput);
        Assert.Equal("succeeded", (await server.WaitFinishedAsync(after)).GetProperty("status").GetString());
    }

    [Fact]
    public async Task Predictions_running_while_writes_fail_finish_and_are_saved_when_the_disk_has_room_again()
    {
        using var directory = new TempDirectory();
        string canceled, succeeded, url;
        await using (ServerHost server = await ServerHost.StartAsync(directory: directory.Path, configure: FaultyStore.Install))
        {
            FaultyStore store = FaultyStore.Of(server);
            canceled = await server.CreateAsync(ServerHost.LongInput);
            await server.WaitStepAsync(canceled);
            succeeded = await server.CreateAsync(ServerHost.QuickInput);   // another size: it waits for the long one
            store.WriteFault = FaultyStore.DiskFull();

            // The cancel's final write fails; the waiting prediction's "processing" and final writes fail: neither the
            // server nor the prediction stops (before, the failed "processing" write failed the generation).
            Reply cancel = await server.PostAsync($"/v1/predictions/{canceled}/cancel", string.Empty);
            Assert.Equal("canceled", cancel.Json.GetProperty("status").GetString());
            JsonElement done = await server.WaitFinishedAsync(succeeded);
            Assert.True(done.GetProperty("status").GetString() == "succeeded", done.ToString());
            url = done.GetProperty("output")[0].GetString()!;
            using (HttpResponseMessage file = await server.Client.GetAsync(url))
            {
                Assert.Equal(HttpStatusCode.OK, file.StatusCode);
            }

            Reply ready = await server.GetAsync("/readyz");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.Status);
            Assert.Equal(2, ready.Json.GetProperty("unsaved").GetInt32());
            JsonElement[] listed = [.. (await server.GetAsync("/v1/predictions")).Json.GetProperty("results").EnumerateArray()];
            Assert.Equal("canceled", listed.Single(p => p.GetProperty("id").GetString() == canceled).GetProperty("status").GetString());
            Assert.Equal("succeeded", listed.Single(p => p.GetProperty("id").GetString() == succeeded).GetProperty("status").GetString());
            Assert.True(store.FailedWrites >= 3, $"{store.FailedWrites} writes failed");

            store.WriteFault = null;
            await WaitReadinessAsync(server, HttpStatusCode.OK);
            Assert.Equal(0, server.App.Services.GetRequiredService<StorageMonitor>().UnsavedCount);
        }

        await using ServerHost restarted = await ServerHost.StartAsync(directory: directory.Path);
        Assert.Equal("canceled", (await restarted.GetAsync($"/v1/predictions/{canceled}")).Json.GetProperty("status").GetString());
        JsonElement saved = (await restarted.GetAsync($"/v1/predictions/{succeeded}")).Json;
        Assert.Equal("succeeded", saved.GetProperty("status").GetString());
        Assert.Equal(url, saved.GetProperty("output")[0].GetString());
    }

    [Fact]
    public async Task A_database_made_read_only_under_a_running_server_refuses_new_predictions_and_recovers()
    {
        using var directory = new TempDirectory();
        await using ServerHost server = await ServerHost.StartAsync(directory: directory.Path, configure: FaultyStore.Install);
        string before = await server.CreateAsync(ServerHost.QuickInput);
        await server.WaitFinishedAsync(before);

        // For real where this machine allows it: the database and its folder (where the journal is created).
        ReadOnlyPaths? readOnly = ReadOnlyPaths.TryMake(directory.Path, server.Options.DatabasePath);
        if (readOnly is null)
        {
            output.WriteLine("No way to make a file read-only here (root without CAP_LINUX_IMMUTABLE): SQLITE_READONLY stands in, thrown by the store as SQLite throws it.");
            FaultyStore.Of(server).WriteFault = FaultyStore.ReadOnly();
        }
        else
        {
            output.WriteLine($"The database and its folder are read-only for real ({readOnly.How}).");
        }

        try
        {
            Reply refused = await server.PostAsync(ModelPath, QuickBody);
            refused.AssertError(HttpStatusCode.ServiceUnavailable, "not accepted");
            output.WriteLine(refused.Json.GetProperty("detail").GetString());
            Reply ready = await server.GetAsync("/readyz");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.Status);
            Assert.Contains(server.Options.DatabasePath, ready.Json.GetProperty("error").GetString(), StringComparison.Ordinal);
            Assert.Equal(HttpStatusCode.OK, (await server.GetAsync($"/v1/predictions/{before}")).Status);
        }
        finally
        {
            readOnly?.Dispose();
            FaultyStore.Of(server).WriteFault = null;
        }

        await WaitReadinessAsync(server, HttpStatusCode.OK);
        string after = await server.CreateAsync(ServerHost.QuickInput);
        Assert.Equal("succeeded", (await server.WaitFinishedAsync(after)).GetProperty("status").GetString());
    }

    [Fact]
    public async Task An_output_folder_that_cannot_be_written_fails_that_prediction_with_the_reason_and_shows_in_readiness()
    {
        await using ServerHost server = await ServerHost.StartAsync();
        using (ReadOnlyPaths? readOnly = ReadOnlyPaths.TryMake(server.Options.OutputDirectory))
        {
            if (readOnly is null)
            {
                output.WriteLine("No way to make a folder read-only here (root without CAP_LINUX_IMMUTABLE): nothing to check.");
                return;
            }

            output.WriteLine($"The output folder is read-only for real ({readOnly.How}).");
            Reply failed = await server.PostAsync(ModelPath, QuickBody, ("Prefer", "wait"));
            Assert.Equal("failed", failed.Json.GetProperty("status").GetString());
            Assert.StartsWith("The images were generated but could not be saved: ", failed.Json.GetProperty("error").GetString(), StringComparison.Ordinal);
            Reply ready = await server.GetAsync("/readyz");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.Status);
            Assert.Contains("output folder", ready.Json.GetProperty("error").GetString(), StringComparison.Ordinal);
        }

        await WaitReadinessAsync(server, HttpStatusCode.OK);
        Reply after = await server.PostAsync(ModelPath, QuickBody, ("Prefer", "wait"));
        Assert.Equal("succeeded", after.Json.GetProperty("status").GetString());
    }

    [Fact]
    public async Task Database_files_truncated_or_made_read_only_under_flux_serve_never_kill_it()
    {
        // A child process: before, the database's WAL index was a memory-mapped file, and a write to a mapped page
        // that cannot be backed (the file truncated, or made immutable) killed the process with SIGBUS.
        using var directory = new TempDirectory();
        string database = directory.File("flux.db");
        await using FluxServeProcess child = await FluxServeProcess.StartAsync(database, directory.File("outputs"));
        await child.CreateAsync(ServerHost.QuickInput, wait: true);
        foreach (string side in Directory.GetFiles(directory.Path, "flux.db-*"))
        {
            output.WriteLine($"truncating {side}");
            using var stream = new FileStream(side, FileMode.Open, FileAccess.Write);
            stream.SetLength(0);
        }

        Exception? failed = await Record.ExceptionAsync(() => child.CreateAsync(ServerHost.QuickInput, wait: true));
        if (failed is not null)
        {
            child.Process.WaitForExit(TimeSpan.FromSeconds(5));   // a dying process: say how it died
        }

        child.AssertAlive();
        Assert.True(failed is null, failed?.Message);
        Assert.False(File.Exists(database + "-shm"), "the database should map no shared-memory file");

        using (ReadOnlyPaths? readOnly = ReadOnlyPaths.TryMake([directory.Path, .. Directory.GetFiles(directory.Path, "flux.db*")]))
        {
            output.WriteLine(readOnly is null ? "No way to make files read-only here: that half is skipped." : $"Read-only: {readOnly.How}");
            if (readOnly is not null)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/models/black-forest-labs/flux-dev/predictions")
                {
                    Content = new StringContent(QuickBody, System.Text.Encoding.UTF8, "application/json"),
                };
                using HttpResponseMessage refused = await child.Client.SendAsync(request);
                Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
                child.AssertAlive();
            }
        }

        await child.WaitReadyAsync();
        await child.CreateAsync(ServerHost.QuickInput, wait: true);
        child.AssertAlive();
    }

    [Fact]
    public async Task A_deleted_data_folder_is_noticed_written_back_and_nothing_is_lost_at_restart()
    {
        using var root = new TempDirectory();
        string data = root.File("data");
        string kept, after;
        await using (ServerHost server = await ServerHost.StartAsync(directory: data))
        {
            kept = (await server.PostAsync(ModelPath, QuickBody, ("Prefer", "wait"))).Json.GetProperty("id").GetString()!;
            Directory.Delete(data, recursive: true);
            File.WriteAllText(data, "a file where the folder was: it cannot come back yet");

            Reply noticed = await WaitReadinessAsync(server, HttpStatusCode.ServiceUnavailable);
            Assert.Contains("deleted", noticed.Json.GetProperty("error").GetString(), StringComparison.Ordinal);
            output.WriteLine(noticed.Json.GetProperty("error").GetString());
            (await server.PostAsync(ModelPath, QuickBody)).AssertError(HttpStatusCode.ServiceUnavailable, "not accepted");
            Assert.Equal(HttpStatusCode.OK, (await server.GetAsync($"/v1/predictions/{kept}")).Status);   // read from the open database

            File.Delete(data);
            await WaitReadinessAsync(server, HttpStatusCode.OK);
            Assert.True(File.Exists(server.Options.DatabasePath));
            Reply created = await server.PostAsync(ModelPath, QuickBody, ("Prefer", "wait"));
            Assert.Equal("succeeded", created.Json.GetProperty("status").GetString());
            after = created.Json.GetProperty("id").GetString()!;
        }

        await using ServerHost restarted = await ServerHost.StartAsync(directory: data);
        Assert.Equal("succeeded", (await restarted.GetAsync($"/v1/predictions/{kept}")).Json.GetProperty("status").GetString());
        Assert.Equal("succeeded", (await restarted.GetAsync($"/v1/predictions/{after}")).Json.GetProperty("status").GetString());
    }

    [Fact]
    public async Task A_database_locked_by_another_process_answers_503_and_recovers_when_released()
    {
        await using ServerHost server = await ServerHost.StartAsync();
        // Prefer: wait answers once the final state is saved (a poll could see it live before, and its write then meet the lock).
        string before = (await server.PostAsync(ModelPath, QuickBody, ("Prefer", "wait"))).Json.GetProperty("id").GetString()!;

        using (var other = new SqliteConnection($"Data Source={server.Options.DatabasePath};Pooling=False"))
        {
            other.Open();
            Execute(other, "BEGIN EXCLUSIVE;");
            Reply refused = await server.PostAsync(ModelPath, QuickBody);
            refused.AssertError(HttpStatusCode.ServiceUnavailable, "locked");
            Reply ready = await server.GetAsync("/readyz");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.Status);
            Assert.Contains("locked", ready.Json.GetProperty("error").GetString(), StringComparison.Ordinal);
            (await server.GetAsync($"/v1/predictions/{before}")).AssertError(HttpStatusCode.ServiceUnavailable, "locked");
            Execute(other, "COMMIT;");
        }

        await WaitReadinessAsync(server, HttpStatusCode.OK);
        string after = await server.CreateAsync(ServerHost.QuickInput);
        Assert.Equal("succeeded", (await server.WaitFinishedAsync(after)).GetProperty("status").GetString());
    }

    [Theory]
    [InlineData("a folder", "cannot be opened")]
    [InlineData("not a database", "not an SQLite database")]
    [InlineData("locked", "locked")]
    [InlineData("read-only", "")]
    public async Task A_database_that_cannot_be_opened_or_written_at_start_is_a_one_line_configuration_error(string fault, string reason)
    {
        using var directory = new TempDirectory();
        FluxServerOptions options = ServerHost.DefaultOptions(directory.Path);
        string database = options.DatabasePath;
        SqliteConnection? locker = null;
        ReadOnlyPaths? readOnly = null;
        switch (fault)
        {
            case "a folder":
                Directory.CreateDirectory(database);
                break;
            case "not a database":
                File.WriteAllText(database, "these are not the bytes of an SQLite database, not at all");
                break;
            case "locked":
                await FluxServer.Build(options).DisposeAsync();
                locker = new SqliteConnection($"Data Source={database};Pooling=False");
                locker.Open();
                Execute(locker, "BEGIN EXCLUSIVE;");
                break;
            default:
                await FluxServer.Build(options).DisposeAsync();
                readOnly = ReadOnlyPaths.TryMake(directory.Path, database);
                if (readOnly is null)
                {
                    output.WriteLine("No way to make a file read-only here (root without CAP_LINUX_IMMUTABLE): nothing to check.");
                    return;
                }

                output.WriteLine($"Read-only: {readOnly.How}");
                break;
        }

        try
        {
            var clock = Stopwatch.StartNew();
            FluxServerConfigurationException e = Assert.Throws<FluxServerConfigurationException>(() => FluxServer.Build(options));
            output.WriteLine(e.Message);
            Assert.StartsWith($"Cannot use the database '{database}': ", e.Message, StringComparison.Ordinal);
            Assert.Contains(reason, e.Message, StringComparison.Ordinal);
            Assert.DoesNotContain('\n', e.Message);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed}");
        }
        finally
        {
            locker?.Dispose();
            readOnly?.Dispose();
        }
    }

    [Theory]
    [InlineData("url_signing_key")]
    [InlineData("webhook_secret")]
    public async Task A_key_missing_over_existing_predictions_is_never_made_anew(string key)
    {
        using var directory = new TempDirectory();
        await using (ServerHost first = await ServerHost.StartAsync(directory: directory.Path))
        {
            await first.PostAsync(ModelPath, QuickBody, ("Prefer", "wait"));
        }

        FluxServerOptions options = ServerHost.DefaultOptions(directory.Path);
        using (var connection = new SqliteConnection($"Data Source={options.DatabasePath};Pooling=False"))
        {
            connection.Open();
            Execute(connection, $"DELETE FROM settings WHERE key = '{key}';");
        }

        FluxServerConfigurationException e = Assert.Throws<FluxServerConfigurationException>(() => FluxServer.Build(options));
        output.WriteLine(e.Message);
        Assert.Contains($"holds 1 prediction(s) but no {key}", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public async Task Readiness_shows_counts_and_never_a_prediction_id()
    {
        await using ServerHost server = await ServerHost.StartAsync();
        string id = await server.CreateAsync(ServerHost.LongInput);
        await server.WaitStepAsync(id);
        using var anonymous = new HttpClient(server.App.GetTestServer().CreateHandler()) { BaseAddress = server.Client.BaseAddress };
        string ready = await anonymous.GetStringAsync("/readyz");
        Assert.DoesNotContain(id, ready, StringComparison.Ordinal);
        Assert.Equal(1, JsonDocument.Parse(ready).RootElement.GetProperty("running").GetInt32());
        await server.PostAsync($"/v1/predictions/{id}/cancel", string.Empty);
    }

    /// <summary>Polls <c>/readyz</c> until it answers <paramref name="status"/> (the probe retries every second), and returns that answer.</summary>
    internal static async Task<Reply> WaitReadinessAsync(ServerHost server, HttpStatusCode status, double seconds = 15)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            Reply ready = await server.GetAsync("/readyz");
            if (ready.Status == status)
            {
                return ready;
            }

            Assert.True(clock.Elapsed.TotalSeconds < seconds, $"/readyz did not answer {(int)status} in {seconds} s: {ready.Text}");
            await Task.Delay(100);
        }
    }

    private static void Execute(SqliteConnection connection, string sql)
    {
        using SqliteCommand command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
