import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  cvcLength,
  detectBrand,
  expiryInFuture,
  formatExpiry,
  formatNumber,
  luhnValid,
  parseExpiry,
} from '../../projects/checkout/src/app/card';

test('luhn: test cards of every length pass, one wrong digit fails', () => {
  for (const number of ['4242 4242 4242 4242', '378282246310005', '5555555555554444', '6011111111111117', '30569309025904']) {
    assert.equal(luhnValid(number), true, number);
  }
  assert.equal(luhnValid('4242424242424241'), false);
  assert.equal(luhnValid('4000000000000002'), true);
});

test('luhn: too short or too long is invalid even when the checksum holds', () => {
  assert.equal(luhnValid('0'.repeat(11)), false);
  assert.equal(luhnValid('0'.repeat(12)), true);
  assert.equal(luhnValid('0'.repeat(19)), true);
  assert.equal(luhnValid('0'.repeat(20)), false);
  assert.equal(luhnValid(''), false);
});

test('brand: from the first digits, amex grouped 4-6-5 with a 4-digit CVC', () => {
  assert.equal(detectBrand('4242'), 'visa');
  assert.equal(detectBrand('2221 00'), 'mastercard');
  assert.equal(detectBrand('3714'), 'amex');
  assert.equal(detectBrand('3530'), 'jcb');
  assert.equal(detectBrand('9999'), 'unknown');
  assert.equal(formatNumber('378282246310005'), '3782 822463 10005');
  assert.equal(formatNumber('42424242424242424242'), '4242 4242 4242 4242 424');
  assert.equal(cvcLength('amex'), 4);
  assert.equal(cvcLength('visa'), 3);
});

test('expiry: MM / YY parsed, month 0 and 13 refused', () => {
  assert.equal(formatExpiry('1234'), '12 / 34');
  assert.deepEqual(parseExpiry('12 / 34'), { month: 12, year: 2034 });
  assert.equal(parseExpiry('00 / 30'), null);
  assert.equal(parseExpiry('13 / 30'), null);
  assert.equal(parseExpiry('1 / 30'), null);
});

test('expiry: a card is valid through the last day of its month, not after', () => {
  const now = new Date(2026, 5, 30); // 30 June 2026
  assert.equal(expiryInFuture(6, 2026, now), true);
  assert.equal(expiryInFuture(5, 2026, now), false);
  assert.equal(expiryInFuture(1, 2027, now), true);
  assert.equal(expiryInFuture(12, 2025, now), false);
});
