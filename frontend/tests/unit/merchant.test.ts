import assert from 'node:assert/strict';
import { test } from 'node:test';

import { timestampFromDate } from '@bufbuild/protobuf/wkt';

import { IdempotencyKey, IdempotencyKeys } from '../../shared/idempotency';
import {
  dayRange,
  eventConcerns,
  keyState,
  normalizeEvents,
  paymentMatches,
  sortTimeline,
  startOfDay,
  volumeByCurrency,
} from '../../projects/merchant/src/app/figures';

/** A key maker that counts: key-1, key-2... */
function counter(): () => string {
  let n = 0;
  return () => `key-${++n}`;
}

test('idempotency: one key for every retry of a submission, a new one after success', () => {
  const key = new IdempotencyKey(counter());
  assert.equal(key.get(), 'key-1');
  assert.equal(key.get(), 'key-1'); // the retry (a double click, a timeout) sends the same key
  key.reset(); // it succeeded, or the form changed
  assert.equal(key.get(), 'key-2');
});

test('idempotency: one-click actions keep their own keys until each succeeds', () => {
  const keys = new IdempotencyKeys(counter());
  assert.equal(keys.get('rotate'), 'key-1');
  assert.equal(keys.get('replay:whd_1'), 'key-2');
  assert.equal(keys.get('rotate'), 'key-1'); // rotate failed and is tried again
  keys.done('rotate');
  assert.equal(keys.get('rotate'), 'key-3');
  assert.equal(keys.get('replay:whd_1'), 'key-2');
});

test('volume: captured amounts add up per currency in bigint, exact beyond 2^53', () => {
  const big = 2n ** 53n + 1n;
  const volume = volumeByCurrency([
    { currency: 'EUR', status: 'succeeded', amountReceived: big },
    { currency: 'EUR', status: 'succeeded', amountReceived: 1n },
    { currency: 'EUR', status: 'failed', amountReceived: 0n },
    { currency: 'BHD', status: 'processing', amountReceived: 0n },
  ]);
  assert.deepEqual(volume, [
    { currency: 'BHD', received: 0n, succeeded: 0, count: 1 },
    { currency: 'EUR', received: big + 1n, succeeded: 2, count: 3 },
  ]);
});

test('today starts at local midnight', () => {
  assert.deepEqual(startOfDay(new Date(2026, 11, 6, 17, 45, 3)), new Date(2026, 11, 6));
});

test('day range: from the start of the first day to the end of the last, either optional', () => {
  assert.deepEqual(dayRange('2026-12-01', '2026-12-31'), {
    createdGte: new Date(2026, 11, 1),
    createdLt: new Date(2027, 0, 1),
  });
  assert.deepEqual(dayRange('', ''), { createdGte: undefined, createdLt: undefined });
  assert.deepEqual(dayRange('not a date', '2026-02-28'), { createdGte: undefined, createdLt: new Date(2026, 2, 1) });
});

test('search: matches the id, description, card and amount, case-insensitively', () => {
  const payment = { id: 'pay_AbC', description: 'Blue mug', card: { brand: 'visa', last4: '4242' }, amount: 1250n };
  for (const text of ['', 'pay_abc', 'MUG', '4242', 'Visa', '125']) {
    assert.ok(paymentMatches(payment, text), text);
  }
  assert.ok(!paymentMatches(payment, 'red'));
  assert.ok(!paymentMatches({ ...payment, card: undefined }, '4242'));
});

test('timeline: oldest first, items of the same instant in the order given', () => {
  const at = (seconds: number): Date => new Date(seconds * 1000);
  const item = (id: string, seconds: number) => ({ time: at(seconds), kind: 'event', title: id, detail: '', id });
  const sorted = sortTimeline([item('c', 3), item('a', 1), item('b1', 2), item('b2', 2)]);
  assert.deepEqual(sorted.map((i) => i.id), ['a', 'b1', 'b2', 'c']);
});

test("an event concerns a payment when its object is the payment or names it (a refund's)", () => {
  assert.ok(eventConcerns({ object: { id: 'pay_1', status: 'succeeded' } }, 'pay_1'));
  assert.ok(eventConcerns({ object: { id: 're_1', payment_id: 'pay_1' } }, 'pay_1'));
  assert.ok(!eventConcerns({ object: { id: 'pay_2' } }, 'pay_1'));
  assert.ok(!eventConcerns({ object: { id: 'we_1', url: 'https://example.com/pay_1' } }, 'pay_1'));
  assert.ok(!eventConcerns(undefined, 'pay_1'));
});

test('API keys: revoked beats expiry; a rolled key is expiring until its time, then expired', () => {
  const now = new Date('2026-12-06T12:00:00Z');
  const later = timestampFromDate(new Date('2026-12-07T12:00:00Z'));
  const earlier = timestampFromDate(new Date('2026-12-05T12:00:00Z'));
  assert.equal(keyState({}, now).state, 'active');
  assert.equal(keyState({ expireTime: later }, now).state, 'expiring');
  assert.equal(keyState({ expireTime: earlier }, now).state, 'expired');
  assert.equal(keyState({ expireTime: later, revokeTime: earlier }, now).state, 'revoked');
});

test('endpoint events: "*" stands alone, other choices are kept as picked', () => {
  assert.deepEqual(normalizeEvents(['payment.succeeded', '*']), ['*']);
  assert.deepEqual(normalizeEvents(['payment.succeeded', 'refund.succeeded']), ['payment.succeeded', 'refund.succeeded']);
  assert.deepEqual(normalizeEvents([]), []);
});
