import assert from 'node:assert/strict';
import { afterEach, mock, test } from 'node:test';

// LiveOverview is an Angular service: JIT-compile the framework's partially compiled injectables.
import '@angular/compiler';
import { Injector, runInInjectionContext } from '@angular/core';

import { LiveOverview, type LiveState } from '../../projects/dashboard/src/app/live';
import { Session } from '../../projects/dashboard/src/app/session';

interface Opened {
  url: string;
  authorization: string;
  /** Ends the stream cleanly, as a server or a proxy's timeout does. */
  end: () => void;
}

/** A LiveOverview whose stream requests are answered by the test; every state it takes is kept. */
function harness(): { live: LiveOverview; opened: Opened[]; states: LiveState[] } {
  let tokens = 0;
  const session = { api: async () => ({ streamToken: `pmst_${++tokens}` }) };
  const opened: Opened[] = [];
  mock.method(globalThis, 'fetch', async (url: string, init: RequestInit) => {
    let end = (): void => undefined;
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        end = () => controller.close();
        init.signal?.addEventListener('abort', () => controller.error(new DOMException('aborted', 'AbortError')));
      },
    });
    opened.push({ url, authorization: new Headers(init.headers).get('Authorization') ?? '', end: () => end() });
    return new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } });
  });
  const injector = Injector.create({ providers: [{ provide: Session, useValue: session }] });
  const live = runInInjectionContext(injector, () => new LiveOverview());
  const states: LiveState[] = [];
  const set = live.state.set.bind(live.state);
  live.state.set = (state: LiveState) => {
    states.push(state);
    set(state);
  };
  return { live, opened, states };
}

/** Lets every pending promise (token, fetch, stream reads) run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

afterEach(() => mock.restoreAll());

test('live: the stream token goes in the Authorization header, never in the URL', async () => {
  const { live, opened } = harness();
  live.start();
  await settle();
  live.stop();
  assert.equal(opened.length, 1);
  assert.equal(opened[0].authorization, 'Bearer pmst_1');
  assert.doesNotMatch(opened[0].url, /pmst_|stream_token/);
});

test('live: a stream the server ends at once is reopened only after a backoff delay', async () => {
  const { live, opened, states } = harness();
  const timers: { reconnect: () => void; delayMs: number }[] = [];
  mock.method(globalThis, 'setTimeout', (reconnect: () => void, delayMs: number) => timers.push({ reconnect, delayMs }));
  live.start();
  await settle();
  assert.equal(states.at(-1), 'live');
  opened[0].end();
  await settle();
  assert.equal(opened.length, 1); // not at once, as the old client did
  assert.equal(timers.length, 1);
  assert.ok(timers[0].delayMs >= 750 && timers[0].delayMs <= 1250, String(timers[0].delayMs)); // 1 s ± 25 %
  timers[0].reconnect();
  await settle();
  assert.equal(opened.length, 2);
  assert.equal(opened[1].authorization, 'Bearer pmst_2');
  opened[1].end();
  await settle();
  assert.ok(timers[1].delayMs >= 1500 && timers[1].delayMs <= 2500, String(timers[1].delayMs)); // doubled
  live.stop();
});

test('live: a stream replaced by a new scope does not mark the new one disconnected', async () => {
  const { live, opened, states } = harness();
  live.start();
  await settle();
  assert.equal(states.at(-1), 'live');
  states.length = 0;
  live.scope('mer_2');
  await settle();
  assert.equal(opened.length, 2);
  assert.match(opened[1].url, /merchant_id=mer_2/);
  // stop() says disconnected; after that, only the new connection moves the state.
  assert.deepEqual(states, ['disconnected', 'connecting', 'live']);
  assert.equal(live.state(), 'live');
  live.stop();
});
