import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Backoff } from '../../projects/dashboard/src/app/backoff';

test('delays double up to the cap, each within ±25 % jitter', () => {
  const low = new Backoff(1000, 15_000, 30_000, () => 0);
  assert.deepEqual([0, 0, 0, 0, 0, 0].map(() => low.delayAfter(0)), [750, 1500, 3000, 6000, 11_250, 11_250]);
  const high = new Backoff(1000, 15_000, 30_000, () => 1);
  assert.deepEqual([0, 0, 0].map(() => high.delayAfter(0)), [1250, 2500, 5000]);
});

test('a stream that ends at once still waits, and longer each time', () => {
  const backoff = new Backoff(1000, 15_000, 30_000, () => 0.5);
  // A server that closes every stream cleanly right after opening it.
  assert.deepEqual([5, 5, 5].map((up) => backoff.delayAfter(up)), [1000, 2000, 4000]);
});

test('a healthy stream resets the delay to the first one', () => {
  const backoff = new Backoff(1000, 15_000, 30_000, () => 0.5);
  backoff.delayAfter(0);
  backoff.delayAfter(0);
  assert.equal(backoff.delayAfter(29_999), 4000);
  assert.equal(backoff.delayAfter(30_000), 1000);
  assert.equal(backoff.delayAfter(0), 2000);
});
