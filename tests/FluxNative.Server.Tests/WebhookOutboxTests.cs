using System.Text.Json;
using FluxNative.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace FluxNative.Server.Tests;

/// <summary>
/// The webhook outbox in one server (SQLite, <c>--role all</c>): the retry cap with the final failure recorded and
/// counted, retries that go on after a restart, finished rows pruned. The same across nodes on PostgreSQL: <see cref="ScaleOutTests"/>.
/// </summary>
public sealed class WebhookOutboxTests
{
    [Fact]
    public async Task A_delivery_that_keeps_failing_stops_at_the_attempt_cap_and_is_recorded_and_counted_as_failed()
    {
        await using var receiver = await WebhookReceiver.StartAsync(0, _ => Task.FromResult<int?>(503));
        await using ServerHost server = await ServerHost.StartAsync(
            o => o with { AllowPrivateWebhookTargets = true, WebhookMaxAttempts = 3, WebhookRetryDelay = TimeSpan.FromMilliseconds(20) }, kestrel: true);
        string id = await server.CreateAsync(ServerHost.QuickInput, $$""","webhook":"{{receiver.Url}}/hook","webhook_events_filter":["completed"]""");
        await server.WaitFinishedAsync(id);
        IPredictionStore store = server.App.Services.GetRequiredService<IPredictionStore>();
        DateTime end = DateTime.UtcNow.AddSeconds(20);
        while (store.Outbox().Failed == 0)
        {
            Assert.True(DateTime.UtcNow < end, $"the delivery never failed for good; attempts: {receiver.Deliveries.Length}");
            await Task.Delay(20);
        }

        await Task.Delay(200);   // a fourth attempt would show now
        Delivery[] attempts = receiver.Deliveries;
        Assert.Equal(3, attempts.Length);
        Assert.Single(attempts.Select(d => d.Id).Distinct());
        Assert.Equal(new OutboxState(0, 0, 1), store.Outbox());
        string metrics = (await server.GetAsync("/metrics")).Text;
        Assert.Contains("\nflux_webhook_attempts_total{outcome=\"retried\"} 2\n", metrics, StringComparison.Ordinal);
        Assert.Contains("\nflux_webhook_attempts_total{outcome=\"failed\"} 1\n", metrics, StringComparison.Ordinal);
        Assert.Contains("\nflux_webhook_attempts_total{outcome=\"delivered\"} 0\n", metrics, StringComparison.Ordinal);
        Assert.Contains("\nflux_webhook_outbox_failed 1\n", metrics, StringComparison.Ordinal);
        Assert.Contains("\nflux_webhook_outbox_pending 0\n", metrics, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Webhooks_of_a_prediction_that_finishes_while_the_database_refuses_writes_are_sent_once_it_takes_them()
    {
        await using var receiver = await WebhookReceiver.StartAsync(0);
        await using ServerHost server = await ServerHost.StartAsync(
            o => o with { AllowPrivateWebhookTargets = true, WebhookRetryDelay = TimeSpan.FromMilliseconds(50) }, kestrel: true, configure: FaultyStore.Install);
        FaultyStore store = FaultyStore.Of(server);
        string id = await server.CreateAsync("""{"prompt":"a fox","image_size":256,"num_inference_steps":8}""",
            $$""","webhook":"{{receiver.Url}}/hook","webhook_events_filter":["completed"]""");
        await server.WaitStepAsync(id);
        store.WriteFault = FaultyStore.DiskFull();
        JsonElement final = await server.WaitFinishedAsync(id);   // answered from memory meanwhile
        Assert.Equal("succeeded", final.GetProperty("status").GetString());
        await Task.Delay(500);
        Assert.Empty(receiver.Deliveries);   // its row could not be written: nothing is sent from memory

        store.WriteFault = null;
        await receiver.WaitAsync(r => r.Any(d => d.Status == 200), TimeSpan.FromSeconds(20));
        Delivery delivered = Assert.Single(receiver.Deliveries);
        Assert.Equal(("completed", id), (delivered.Event, JsonDocument.Parse(delivered.Body).RootElement.GetProperty("id").GetString()));
        Assert.Equal("succeeded", JsonDocument.Parse(delivered.Body).RootElement.GetProperty("status").GetString());
    }

    [Fact]
    public async Task Finished_deliveries_leave_the_outbox_with_the_outputs()
    {
        await using var receiver = await WebhookReceiver.StartAsync(0);
        await using ServerHost server = await ServerHost.StartAsync(
            o => o with { AllowPrivateWebhookTargets = true, OutputRetention = TimeSpan.FromSeconds(1) }, kestrel: true);
        string id = await server.CreateAsync(ServerHost.QuickInput, $$""","webhook":"{{receiver.Url}}/hook","webhook_events_filter":["completed"]""");
        await server.WaitFinishedAsync(id);
        await receiver.WaitAsync(r => r.Any(d => d.Status == 200), TimeSpan.FromSeconds(20));
        Assert.Equal(1, Rows());

        DateTime end = DateTime.UtcNow.AddSeconds(20);
        while (Rows() > 0)
        {
            Assert.True(DateTime.UtcNow < end, "the delivered row was never pruned");
            await Task.Delay(100);
        }

        Assert.Single(receiver.Deliveries);

        long Rows()
        {
            using var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={server.Options.DatabasePath};Pooling=False");
            connection.Open();
            using var command = connection.CreateCommand();
            command.CommandText = "SELECT count(*) FROM webhook_deliveries;";
            return (long)command.ExecuteScalar()!;
        }
    }

    [Fact]
    public async Task Retries_cut_short_by_a_restart_go_on_after_it_with_the_same_webhook_id()
    {
        int failing = 1;
        await using var receiver = await WebhookReceiver.StartAsync(0, _ => Task.FromResult<int?>(Volatile.Read(ref failing) == 1 ? 500 : 200));
        using var directory = new TempDirectory();
        Func<FluxServerOptions, FluxServerOptions> options = o => o with
        {
            AllowPrivateWebhookTargets = true, WebhookMaxAttempts = 50, WebhookRetryDelay = TimeSpan.FromMilliseconds(100),
        };
        string id;
        await using (ServerHost first = await ServerHost.StartAsync(options, kestrel: true, directory: directory.Path))
        {
            id = await first.CreateAsync(ServerHost.QuickInput, $$""","webhook":"{{receiver.Url}}/hook","webhook_events_filter":["completed"]""");
            await first.WaitFinishedAsync(id);
            await receiver.WaitAsync(r => r.Length >= 2, TimeSpan.FromSeconds(20));
        }

        Delivery[] refused = receiver.Deliveries;
        Assert.All(refused, d => Assert.Equal(500, d.Status));
        Volatile.Write(ref failing, 0);
        await using ServerHost second = await ServerHost.StartAsync(options, kestrel: true, directory: directory.Path);
        await receiver.WaitAsync(r => r.Any(d => d.Status == 200), TimeSpan.FromSeconds(30));
        Delivery delivered = Assert.Single(receiver.Deliveries, d => d.Status == 200);
        Assert.Equal(refused[0].Id, delivered.Id);
        Assert.Equal(id, JsonDocument.Parse(delivered.Body).RootElement.GetProperty("id").GetString());
        Assert.Equal(new OutboxState(0, 0, 0), second.App.Services.GetRequiredService<IPredictionStore>().Outbox());
    }
}
