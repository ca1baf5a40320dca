import assert from 'node:assert/strict';
import { test } from 'node:test';

import { checkFeeSchedule } from '../../projects/dashboard/src/app/fees';

test('fees: whole numbers in range are saved as they are, the bounds included', () => {
  assert.deepEqual(checkFeeSchedule(290, 30), { feeBps: 290, feeFixed: 30n });
  assert.deepEqual(checkFeeSchedule(0, 0), { feeBps: 0, feeFixed: 0n });
  assert.deepEqual(checkFeeSchedule(10_000, Number.MAX_SAFE_INTEGER), {
    feeBps: 10_000,
    feeFixed: 9007199254740991n,
  });
});

test('fees: an empty basis-points field (null) is refused, never saved as 0', () => {
  assert.match(String(checkFeeSchedule(null, 30)), /fee in basis points/);
});

test('fees: basis points that are fractional, negative, above 10000 or not a number are refused', () => {
  for (const feeBps of [1.5, -1, 10_001, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.match(String(checkFeeSchedule(feeBps, 30)), /fee in basis points/, String(feeBps));
  }
});

test('fees: an empty, fractional, negative or unsafe fixed fee is refused', () => {
  for (const feeFixed of [null, 0.5, -1, Number.MAX_SAFE_INTEGER + 1, Number.NaN]) {
    assert.match(String(checkFeeSchedule(290, feeFixed)), /fixed fee/, String(feeFixed));
  }
});
