using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;

namespace FluxNative.Server.Tests;

/// <summary>A bounded load on Kestrel on loopback: 200 requests from 8 clients at once, 10 % malformed.</summary>
public sealed class LoadTests
{
    private static readonly string[] Malformed =
    [
        """{"input":{"prompt":"x","image_size":64""",                     // cut short
        """{"input":{"prompt":42}}""",                                      // wrong type
        """{"input":{"prompt":"x","num_inference_steps":-1}}""",          // out of range
        """{"input":{"prompt":"x","aspect_ratio":"sideways"}}""",         // bad enum
        """{"inputs":{"prompt":"x"}}""",                                    // misspelt
        """[]""",
        """{"input":{"prompt":"x","output_format":"tiff"}}""",
        """{"input":{"prompt":"x","seed":1e400}}""",
        """{"input":{"prompt":"x","speed_mode":"turbo"}}""",
        """not json at all""",
    ];

    [Fact]
    public async Task Two_hundred_requests_with_ten_percent_malformed_give_no_5xx_and_lose_no_prediction()
    {
        await using ServerHost server = await ServerHost.StartAsync(o => o with { QueueSize = 256 }, kestrel: true);
        const int total = 200, clients = 8;
        var statuses = new ConcurrentBag<(int Index, HttpStatusCode Status, string Body)>();
        var accepted = new ConcurrentBag<string>();
        var clock = Stopwatch.StartNew();
        int next = -1;
        await Task.WhenAll(Enumerable.Range(0, clients).Select(async _ =>
        {
            int index;
            while ((index = Interlocked.Increment(ref next)) < total)
            {
                bool bad = index % 10 == 0;
                bool openAi = !bad && index % 3 == 0;
                string path = openAi ? "/v1/images/generations" : "/v1/models/black-forest-labs/flux-dev/predictions";
                string body = bad ? Malformed[index / 10 % Malformed.Length]
                    : openAi ? $$"""{"prompt":"load {{index}}","size":"64x64","num_inference_steps":1,"response_format":"b64_json"}"""
                    : $$$"""{"input":{"prompt":"load {{{index}}}","image_size":64,"num_inference_steps":1,"output_format":"png"}}""";
                using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
                using HttpResponseMessage response = await server.Client.SendAsync(request);
                string text = await response.Content.ReadAsStringAsync();
                statuses.Add((index, response.StatusCode, text));
                if (!bad && response.IsSuccessStatusCode)
                {
                    accepted.Add(JsonDocument.Parse(text).RootElement.GetProperty("id").GetString()!);
                }
            }
        }));

        Assert.Equal(total, statuses.Count);
        Assert.DoesNotContain(statuses, s => (int)s.Status >= 500);
        foreach ((int index, HttpStatusCode status, string body) in statuses)
        {
            if (index % 10 == 0)
            {
                // Bodies that are not JSON objects are 400; JSON with invalid input is Replicate's 422.
                Assert.True(status is HttpStatusCode.BadRequest or HttpStatusCode.UnprocessableEntity, $"malformed #{index}: {(int)status} {body}");
                Assert.False(string.IsNullOrEmpty(JsonDocument.Parse(body).RootElement.GetProperty("error").GetProperty("message").GetString()));
            }
            else
            {
                Assert.True(status is HttpStatusCode.OK or HttpStatusCode.Created, $"#{index}: {(int)status} {body}");
            }
        }

        // Every accepted prediction finishes, and finishes well.
        Assert.Equal(total - (total / 10), accepted.Count);
        foreach (string id in accepted)
        {
            JsonElement p = await server.WaitFinishedAsync(id, 120);
            Assert.Equal("succeeded", p.GetProperty("status").GetString());
        }

        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(90), $"load took {clock.Elapsed}");
    }
}
