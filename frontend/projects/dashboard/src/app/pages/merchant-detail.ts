import { Component, OnInit, computed, inject, input, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { MatSelectModule } from '@angular/material/select';
import { RouterLink } from '@angular/router';

import { AdminService, type ApiKey, type Invite, type Merchant, type User } from '@gen/paymesh/admin/v1/admin_pb';
import { Actions } from '@shared/actions';
import { Confirm } from '@shared/confirm';
import { checkFeeSchedule } from '../fees';
import { TimePipe } from '@shared/format';
import { IdempotencyKey } from '@shared/idempotency';
import { Session, describeError } from '../session';

/**
 * One merchant: fee schedule, API keys (create once-shown, list by prefix, revoke), and its
 * dashboard users (list, invite with the link shown once).
 */
@Component({
  selector: 'pm-merchant-detail-page',
  imports: [FormsModule, RouterLink, MatButtonModule, MatFormFieldModule, MatInputModule, MatSelectModule, TimePipe],
  templateUrl: './merchant-detail.html',
  styles: `
    table { width: 100%; border-collapse: collapse; }
    th, td { text-align: left; padding: 0.5rem; border-bottom: 1px solid #e6e8ee; font-size: 0.9rem; }
    th { font-weight: 500; color: #545b69; }
    .revoked td { color: #7a8090; }
    .new-key { border: 2px solid #2e9d55; background: #f1faf3; }
    .key { display: block; padding: 0.5rem; background: #fff; border: 1px solid #c9d2e3; border-radius: 6px; word-break: break-all; margin: 0.5rem 0; }
    mat-form-field { width: 200px; }
    .invites-title { font-size: 0.95rem; font-weight: 500; margin: 1rem 0 0.5rem; }
  `,
})
export class MerchantDetailPage implements OnInit {
  readonly id = input.required<string>();
  readonly session = inject(Session);
  private readonly confirm = inject(Confirm);
  readonly merchant = signal<Merchant | null>(null);
  readonly keys = signal<ApiKey[]>([]);
  readonly newKey = signal<ApiKey | null>(null);
  readonly copied = signal(false);
  private readonly actions = new Actions();
  readonly error = this.actions.error;
  readonly notice = this.actions.notice;
  readonly busy = this.actions.busy;
  readonly prefixFilter = signal('');
  readonly shownKeys = computed(() => {
    const filter = this.prefixFilter().trim();
    return this.keys().filter((k) => k.prefix.startsWith(filter));
  });
  /** null when the field is empty (or not a number): ngModel's value for it, never saved as 0. */
  feeBps: number | null = 0;
  feeFixed: number | null = 0;
  keyMode = 'test';
  keyKind = 'secret';
  readonly users = signal<User[]>([]);
  readonly invites = signal<Invite[]>([]);
  readonly invited = signal<Invite | null>(null);
  readonly usersError = signal('');
  inviteEmail = '';
  inviteRole = 'admin';
  /** One key per invitation the operator means to send. */
  readonly inviteKey = new IdempotencyKey();

  ngOnInit(): void {
    void this.load();
  }

  async load(): Promise<void> {
    try {
      void this.loadUsers();
      const [merchant, keys] = await Promise.all([
        this.session.api(AdminService.method.getMerchant, { id: this.id() }),
        this.session.api(AdminService.method.listApiKeys, { merchantId: this.id() }),
      ]);
      this.merchant.set(merchant);
      this.feeBps = merchant.feeBps;
      this.feeFixed = Number(merchant.feeFixed);
      this.keys.set(keys.apiKeys);
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  /** The merchant's users and open invitations, in a section of its own. */
  async loadUsers(): Promise<void> {
    try {
      const users = await this.session.api(AdminService.method.listMerchantUsers, { merchantId: this.id() });
      this.users.set(users.users);
      this.invites.set(users.invites);
      this.usersError.set('');
    } catch (error) {
      this.usersError.set(describeError(error));
    }
  }

  async invite(): Promise<void> {
    if (!this.inviteEmail.trim()) {
      this.error.set('Enter the email address to invite.');
      return;
    }
    await this.actions.run(async () => {
      const invite = await this.session.api(
        AdminService.method.inviteMerchantUser,
        { merchantId: this.id(), email: this.inviteEmail.trim(), role: this.inviteRole },
        { idempotencyKey: this.inviteKey.get() },
      );
      this.inviteKey.reset();
      this.inviteEmail = '';
      this.invited.set(invite);
      await this.loadUsers();
    });
  }

  async copyInvite(): Promise<void> {
    const link = this.invited()?.acceptUrl;
    if (!link) return;
    try {
      await navigator.clipboard.writeText(link);
      this.notice.set('Invitation link copied.');
    } catch {
      this.error.set('The browser refused the clipboard: select the link and copy it by hand.');
    }
  }

  async saveFees(): Promise<void> {
    const fees = checkFeeSchedule(this.feeBps, this.feeFixed);
    if (typeof fees === 'string') {
      this.notice.set('');
      this.error.set(fees);
      return;
    }
    await this.actions.run(async () => {
      this.merchant.set(await this.session.api(AdminService.method.updateMerchantFees, { id: this.id(), ...fees }));
      this.notice.set('Fee schedule saved.');
    });
  }

  async createKey(): Promise<void> {
    await this.actions.run(async () => {
      const key = await this.session.api(AdminService.method.createApiKey, {
        merchantId: this.id(),
        mode: this.keyMode,
        kind: this.keyKind,
      });
      this.copied.set(false);
      this.newKey.set(key);
      const keys = await this.session.api(AdminService.method.listApiKeys, { merchantId: this.id() });
      this.keys.set(keys.apiKeys);
    });
  }

  async copyKey(): Promise<void> {
    const key = this.newKey()?.key;
    if (!key) return;
    try {
      await navigator.clipboard.writeText(key);
      this.copied.set(true);
    } catch {
      this.error.set('The browser refused the clipboard: select the key and copy it by hand.');
    }
  }

  async revoke(key: ApiKey): Promise<void> {
    const confirmed = await this.confirm.ask({
      title: 'Revoke this API key?',
      message: `Revoke ${key.prefix}… (${key.mode}, ${key.kind})? Calls with this key will be refused within seconds; this cannot be undone.`,
      action: 'Revoke key',
    });
    if (!confirmed) return;
    await this.actions.run(async () => {
      const revoked = await this.session.api(AdminService.method.revokeApiKey, { id: key.id });
      this.keys.update((all) => all.map((k) => (k.id === revoked.id ? revoked : k)));
      if (this.newKey()?.id === revoked.id) this.newKey.set(null);
      this.notice.set(`Key ${revoked.prefix}… revoked.`);
    });
  }
}
